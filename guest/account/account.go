// Package account resolves the user a session runs as from /etc/passwd and
// /etc/group, without PAM and without a login shell.
package account

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"syscall"
)

// Account is everything a session needs to run as a user.
type Account struct {
	Name   string   // login name; for a uid with no passwd entry, the uid in decimal
	UID    uint32   //
	GID    uint32   // primary group
	Groups []uint32 // supplementary groups, the primary group among them
	Home   string   // home directory; "/" for a uid with no passwd entry
	Shell  string   // login shell; /bin/sh when the entry has none
}

// ErrUnknown is wrapped by the error Lookup returns for a name with no
// passwd entry.
var ErrUnknown = errors.New("unknown user")

// Lookup resolves spec, a login name or a numeric uid.
//
// A numeric uid with no passwd entry is allowed, as docker and kubernetes
// allow it: the account gets gid = uid, no supplementary groups, HOME=/ and
// the uid as its name. A name with no entry is an error wrapping ErrUnknown.
func Lookup(spec string) (*Account, error) {
	if spec == "" {
		return nil, fmt.Errorf("%w: empty user name", ErrUnknown)
	}
	u, err := user.Lookup(spec)
	if err != nil {
		n, perr := strconv.ParseUint(spec, 10, 32)
		if perr != nil {
			return nil, fmt.Errorf("%w %q: no such entry in /etc/passwd", ErrUnknown, spec)
		}
		return ByUID(uint32(n))
	}
	return fromUser(u)
}

// ByUID returns uid's own account: its first passwd entry, the one
// getpwuid(3) gives, whatever other entries share the uid. A uid with no
// entry gets gid = uid, no supplementary groups, HOME=/ and the uid as its
// name, as Lookup gives it.
func ByUID(uid uint32) (*Account, error) {
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return &Account{Name: strconv.FormatUint(uint64(uid), 10), UID: uid, GID: uid, Groups: []uint32{uid}, Home: "/", Shell: "/bin/sh"}, nil
	}
	return fromUser(u)
}

// Current returns the account corkd itself runs as.
func Current() (*Account, error) {
	u, err := user.LookupId(strconv.Itoa(os.Geteuid()))
	if err != nil {
		uid := uint32(os.Geteuid())
		gid := uint32(os.Getegid())
		return &Account{Name: strconv.Itoa(int(uid)), UID: uid, GID: gid, Groups: []uint32{gid}, Home: "/", Shell: "/bin/sh"}, nil
	}
	return fromUser(u)
}

func fromUser(u *user.User) (*Account, error) {
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %q: bad uid %q", u.Username, u.Uid)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %q: bad gid %q", u.Username, u.Gid)
	}
	a := &Account{Name: u.Username, UID: uint32(uid), GID: uint32(gid), Home: u.HomeDir, Shell: shellOf(u.Username)}
	if a.Home == "" {
		a.Home = "/"
	}
	// The supplementary groups must be listed explicitly: an empty list
	// would drop them, and none at all would keep corkd's (golang/go#15865).
	ids, err := u.GroupIds()
	if err != nil {
		ids = []string{u.Gid}
	}
	seen := map[uint32]bool{}
	for _, s := range append([]string{u.Gid}, ids...) {
		g, err := strconv.ParseUint(s, 10, 32)
		if err != nil || seen[uint32(g)] {
			continue
		}
		seen[uint32(g)] = true
		a.Groups = append(a.Groups, uint32(g))
	}
	return a, nil
}

// Credential returns the credential that makes a child run as a: set on
// exec.Cmd's SysProcAttr, it has the Go runtime call setgroups (these
// groups), setgid and setuid, in that order, in the child before exec.
func (a *Account) Credential() *syscall.Credential {
	return &syscall.Credential{Uid: a.UID, Gid: a.GID, Groups: a.Groups}
}

// TTYGroup returns the gid of group "tty", which owns terminals on most
// systems, or a's own group when there is no such group.
func (a *Account) TTYGroup() uint32 {
	if g, err := user.LookupGroup("tty"); err == nil {
		if n, err := strconv.ParseUint(g.Gid, 10, 32); err == nil {
			return uint32(n)
		}
	}
	return a.GID
}
