package agent

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/corkvm/cork/guest/account"
	"github.com/corkvm/cork/protocol"
)

// The user switch: who a session or a copy runs as (account), and each
// place corkd takes that user's identity. A program is started as the
// user (programCredential), on a terminal the user owns (ownTerminal); a
// copy's thread takes the user's identity for the filesystem (actAs).
// Forwarding, whose sockets record the uid that makes them, switches a
// thread's real and effective ids instead (asUser in forwarddial.go).
// No PAM and no login shell: the account comes from /etc/passwd and
// /etc/group (guest/account).

// account resolves the session's user: the one named, or corkd's own. A
// peer confined to its own uid gets only that; a corkd that is not root can
// serve only itself.
func (s *Server) account(user string, peer Peer) (*account.Account, *protocol.Error) {
	if !peer.AsAny {
		acct, perr := confinedAccount(user, peer)
		if perr != nil {
			return nil, perr
		}
		return s.canServe(acct, user)
	}
	if user == "" {
		if s.self == nil {
			return nil, &protocol.Error{Kind: protocol.KindUser, Message: "corkd cannot resolve its own user; name one"}
		}
		return s.self, nil
	}
	acct, err := account.Lookup(user)
	if err != nil {
		return nil, &protocol.Error{Kind: protocol.KindUser, Message: err.Error()}
	}
	return s.canServe(acct, user)
}

// canServe checks that corkd can run a session as acct: as root it can
// switch to anyone, otherwise it serves only its own uid.
func (s *Server) canServe(acct *account.Account, user string) (*account.Account, *protocol.Error) {
	if user == "" {
		user = acct.Name
	}
	if euid := os.Geteuid(); acct.UID != uint32(euid) && euid != 0 {
		self := fmt.Sprint(euid)
		if s.self != nil {
			self = fmt.Sprintf("%d (%s)", euid, s.self.Name)
		}
		return nil, &protocol.Error{Kind: protocol.KindUser, Message: fmt.Sprintf(
			"corkd runs as uid %s, not root, so it cannot switch to user %q; run corkd as root or omit the user", self, user)}
	}
	return acct, nil
}

// programCredential is the credential a session's program starts with:
// nil when corkd already runs as acct, else acct's, which has the Go
// runtime switch the user in the child between fork and exec: setgroups
// (the user's groups, listed explicitly), then setgid, then setuid.
func programCredential(acct *account.Account) *syscall.Credential {
	if acct.UID == uint32(os.Geteuid()) {
		return nil
	}
	return acct.Credential()
}

// ownTerminal gives the terminal to the user, as login(1) leaves it: owner
// the user, group tty, mode 0620. corkd not running as root can only chown
// to itself, which it already is.
func ownTerminal(slave *os.File, acct *account.Account) error {
	if err := slave.Chown(int(acct.UID), int(acct.TTYGroup())); err != nil && os.Geteuid() == 0 {
		return err
	}
	return slave.Chmod(0o620)
}

// actAs gives the calling thread acct's identity for the filesystem: its
// groups, then its filesystem gid and uid (setfsuid(2)). Changing the
// filesystem uid from 0 drops the capabilities that bypass permission
// checks, so the thread reads and writes only what acct may. These calls
// affect this thread alone; the caller has locked it.
func actAs(acct *account.Account) error {
	if uint32(os.Geteuid()) != 0 {
		return nil // corkd serves only its own user (canServe)
	}
	if acct.UID == 0 {
		return nil
	}
	groups := make([]int, len(acct.Groups))
	for i, g := range acct.Groups {
		groups[i] = int(g)
	}
	if err := unix.Setgroups(groups); err != nil {
		return fmt.Errorf("setting the groups of %s: %w", acct.Name, err)
	}
	unix.Setfsgid(int(acct.GID))
	unix.Setfsuid(int(acct.UID))
	// setfsuid reports no failure; reading the values back does.
	if gid, _ := unix.SetfsgidRetGid(-1); gid != int(acct.GID) {
		return fmt.Errorf("taking gid %d for %s: still %d", acct.GID, acct.Name, gid)
	}
	if uid, _ := unix.SetfsuidRetUid(-1); uid != int(acct.UID) {
		return fmt.Errorf("taking uid %d for %s: still %d", acct.UID, acct.Name, uid)
	}
	return nil
}
