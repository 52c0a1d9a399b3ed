package agent

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"

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
	l    *net.UnixListener
}

// asUser runs fn on a thread that has acct's filesystem identity, so that
// what fn makes is the user's and the kernel checks the user's rights on
// every path fn names. The thread is never unlocked: it ends with its
// goroutine and runs nothing else (see dialUnixAs).
func asUser(acct *account.Account, fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := actAs(acct); err != nil {
			done <- err
			return
		}
		done <- fn()
	}()
	return <-done
}

// makeAgentSocket makes a fresh directory in the guest's temporary
// directory and listens in it, both as acct: mkdir(2) makes a new entry or
// fails, so nothing planted beforehand is followed, and the directory
// (0700) keeps other users away from the socket.
func makeAgentSocket(srv *Server, acct *account.Account, log *slog.Logger) (*agentSocket, error) {
	a := &agentSocket{srv: srv, acct: acct, log: log}
	err := asUser(acct, func() error {
		dir, err := os.MkdirTemp(os.TempDir(), "cork-agent-")
		if err != nil {
			return err
		}
		path := filepath.Join(dir, "agent")
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			os.Remove(dir)
			return err
		}
		// Close must not unlink as root on a thread that is not the
		// user's: remove does it, as the user.
		l.SetUnlinkOnClose(false)
		a.dir, a.path, a.l = dir, path, l
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("making the agent socket for %s: %w", acct.Name, err)
	}
	return a, nil
}

// serve opens a stream to the host on m for each connection to the
// socket, until close.
func (a *agentSocket) serve(m *streams.Mux) {
	for {
		c, err := a.l.AcceptUnix()
		if err != nil {
			return
		}
		if uid, err := peerUID(c); err != nil || (uid != a.acct.UID && uid != 0) {
			a.log.Warn("agent socket: connection from another user refused", "uid", uid, "err", err)
			c.Close()
			continue
		}
		go a.srv.carryToHost(m, a.acct, a.log, c, protocol.NetAgent, a.path)
	}
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
		if err := os.Remove(a.path); err != nil && !os.IsNotExist(err) {
			return err
		}
		return os.Remove(a.dir)
	})
	if err != nil && !os.IsNotExist(err) {
		a.log.Warn("removing the agent socket", "path", a.path, "err", err)
	}
}
