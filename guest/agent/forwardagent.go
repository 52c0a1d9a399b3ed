package agent

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/corkvm/cork/guest/account"
	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/streams"
)

// agentSocket is the guest's end of agent forwarding (ssh -A): a socket in
// a directory of its own, mode 0700 and owned by the session's user, whose
// connections the agent carries to the host's ssh-agent.
type agentSocket struct {
	srv  *Server
	acct *account.Account
	log  *slog.Logger
	dir  string
	path string
	ino  uint64 // the socket's inode: a later client's socket at path is not removed
	l    *net.UnixListener
}

// agentSession resolves a Forward's user and, for cork attach -A, the
// agent socket's path: the SSH_AUTH_SOCK of the kept session it names,
// which runs as the session's user. The peer reaches the session as
// Attach does.
func (s *Server) agentSession(req *protocol.Forward, peer Peer) (user, path string, perr *protocol.Error) {
	if !req.Agent || req.AgentSession == "" {
		return req.User, "", nil
	}
	ss := s.kept.find(req.AgentSession, peer)
	if ss == nil {
		return "", "", &protocol.Error{Kind: protocol.KindSession, Message: noSuchSession(req.AgentSession)}
	}
	path = lookupEnv(ss.cmd.Env, "SSH_AUTH_SOCK")
	if !isAgentPath(path) {
		return "", "", &protocol.Error{Kind: protocol.KindForward,
			Message: fmt.Sprintf("session %s has no agent socket of corkd's (start it with cork exec -A)", req.AgentSession)}
	}
	return ss.user, path, nil
}

// isAgentPath reports whether path is where makeAgentSocket puts sockets:
// only there does corkd make one again.
func isAgentPath(path string) bool {
	dir := filepath.Dir(path)
	return filepath.IsAbs(path) && filepath.Base(path) == "agent" &&
		filepath.Dir(dir) == filepath.Clean(os.TempDir()) && strings.HasPrefix(filepath.Base(dir), "cork-agent-")
}

// makeAgentSocket listens in a directory of acct's alone, as acct: a fresh
// one in the guest's temporary directory, or the one of path (cork attach
// -A). mkdir(2) makes a new entry or fails, so nothing planted beforehand
// is followed, and the directory (0700) keeps other users away from the
// socket.
func makeAgentSocket(srv *Server, acct *account.Account, log *slog.Logger, path string) (*agentSocket, error) {
	a := &agentSocket{srv: srv, acct: acct, log: log}
	err := asUser(acct, func() error {
		dir, err := agentDir(acct, path)
		if err != nil {
			return err
		}
		path := filepath.Join(dir, "agent")
		os.Remove(path) // one left by an earlier client: the user's to remove
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			os.Remove(dir)
			return err
		}
		// Close must not unlink as root on a thread that is not the
		// user's: remove does it, as the user.
		l.SetUnlinkOnClose(false)
		a.dir, a.path, a.l = dir, path, l
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err == nil {
			a.ino = st.Ino
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("making the agent socket for %s: %w", acct.Name, err)
	}
	return a, nil
}

// agentDir makes the socket's directory, as the user: a fresh one, or
// path's again. A directory already at path's must be acct's, mode 0700:
// another user may have taken the name, and gets nothing from it.
func agentDir(acct *account.Account, path string) (string, error) {
	if path == "" {
		return os.MkdirTemp(os.TempDir(), "cork-agent-")
	}
	dir := filepath.Dir(path)
	if err := os.Mkdir(dir, 0o700); err != nil && !os.IsExist(err) {
		return "", err
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return "", err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Uid != acct.UID || st.Mode&0o077 != 0 {
		return "", fmt.Errorf("%s is not a directory of %s's alone", dir, acct.Name)
	}
	return dir, nil
}

// serve opens a stream to the host on m for each connection to the
// socket, until close.
func (a *agentSocket) serve(m *streams.Mux) {
	// Any guest user can connect to the socket: what is logged of its
	// connections is limited as a peer's are.
	warn, info := a.srv.limitLog(a.log.Warn, a.acct.UID), a.srv.limitLog(a.log.Info, a.acct.UID)
	acceptEach(a.l, warn, func(c net.Conn) {
		uid, err := peerUID(c.(*net.UnixConn))
		if err != nil || (uid != a.acct.UID && uid != 0) {
			warn("agent socket: connection from another user refused", "uid", uid, "err", err)
			c.Close()
			return
		}
		if release, ok := a.srv.takeStream(uid, warn, c, a.path); ok {
			go a.srv.carryToHost(m, release, info, c, protocol.NetAgent, a.path)
		}
	})
}

// peerUID is the uid of the process that connected c (SO_PEERCRED).
func peerUID(c *net.UnixConn) (uint32, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if credErr != nil {
		return 0, credErr
	}
	return cred.Uid, nil
}

// close stops listening and removes the socket and its directory, as the
// user: the directory is the user's, who may have put anything at its
// name since, and root must not follow that.
func (a *agentSocket) close() {
	a.l.Close()
	err := asUser(a.acct, func() error {
		var st unix.Stat_t
		if unix.Lstat(a.path, &st) == nil && st.Ino != a.ino {
			return nil // a later cork attach -A's socket
		}
		if err := os.Remove(a.path); err != nil && !os.IsNotExist(err) {
			return err
		}
		return os.Remove(a.dir)
	})
	if err != nil && !os.IsNotExist(err) {
		a.log.Warn("removing the agent socket", "path", a.path, "err", err)
	}
}
