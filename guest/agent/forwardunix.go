package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/corkvm/cork/guest/account"
)

// unixSocket is a remote forward's listener on a unix socket in the guest
// (ssh -R /path.sock:...): corkd made it as the forwarding user, and
// removes it as that user when it closes.
type unixSocket struct {
	*net.UnixListener
	user     *userThread // the forwarding connection's: Close removes the socket with it
	path     string
	dev, ino uint64 // what corkd made at path: a later file there is not removed
}

// maxSocketPath is the longest path a unix socket's address holds: the
// 108 bytes of sun_path, the last a NUL.
const maxSocketPath = 107

// socketMask is the umask a remote forward's socket is made with: mode
// 0600, as sshd's StreamLocalBindMask makes it, so only its user (and
// root) may connect.
const socketMask = 0o177

// listenUnixAs makes a unix socket at path as user's account, mode 0600,
// and listens on it. The bind runs on a thread with the account's
// identity, so the kernel checks the account's permissions on the
// directory and the socket is the account's. A file at path, of any kind,
// is never replaced: sshd's StreamLocalBindUnlink is no by default too.
func listenUnixAs(user *userThread, path string) (*unixSocket, error) {
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("unix socket path of %d bytes: a socket's address holds at most %d", len(path), maxSocketPath)
	}
	s := &unixSocket{user: user, path: path}
	err := asUserMasked(user.acct, socketMask, func() error {
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			return err
		}
		// Close must not unlink as root, nor a file that is no longer
		// this socket: Close does it, as the user.
		l.SetUnlinkOnClose(false)
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			l.Close()
			return err
		}
		s.UnixListener, s.dev, s.ino = l, st.Dev, st.Ino
		return nil
	})
	if errors.Is(err, unix.EADDRINUSE) {
		return nil, fmt.Errorf("%s exists already: corkd does not replace it (as sshd's StreamLocalBindUnlink no); remove it first", path)
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Close stops listening and removes the socket, as the user and only if
// path still names the socket corkd made: the user, or another user
// where the directory lets them, may have put something else there since.
func (s *unixSocket) Close() error {
	s.UnixListener.Close()
	_, err := s.user.do(context.Background(), func() (io.Closer, error) {
		var st unix.Stat_t
		if err := unix.Lstat(s.path, &st); err != nil || st.Dev != s.dev || st.Ino != s.ino {
			return nil, nil // gone, or no longer the socket corkd made
		}
		return nil, os.Remove(s.path)
	})
	return err
}

// asUserMasked runs fn on a thread of its own with umask as its umask and
// acct's identity. The thread first stops sharing its filesystem
// attributes (unshare(CLONE_FS)), so the umask is its alone: the
// process's, which every other thread shares, is left as it is.
func asUserMasked(acct *account.Account, umask int, fn func() error) error {
	errc := make(chan error, 1)
	go onOwnThread(func() {
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			errc <- fmt.Errorf("a thread of its own umask: %w", os.NewSyscallError("unshare", err))
			return
		}
		unix.Umask(umask)
		if err := becomeUser(acct); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	})
	return <-errc
}

// onOwnThread runs fn on a thread locked to it and never unlocked, so that
// Go ends the thread after fn, and no other work ever runs with what fn
// changed of it. Never on the main thread: Go parks a locked main thread
// whose goroutine ends instead of ending it, and the main thread's
// identity is the process's for kill(2) and ps. On the main thread, fn
// goes to another goroutine, which this one's lock keeps off it.
func onOwnThread(fn func()) {
	runtime.LockOSThread()
	if unix.Gettid() != unix.Getpid() {
		fn()
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		onOwnThread(fn)
	}()
	<-done
	runtime.UnlockOSThread()
}
