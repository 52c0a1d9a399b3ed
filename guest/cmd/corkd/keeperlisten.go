package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corkvm/cork/guest/listen"
)

// The keeper's side: it holds the lock its relay handed it for its life,
// and keeps its socket where relays look for it. A socket removed (by the
// user, or a /tmp cleaner with the directory) or replaced would otherwise
// make the next relay start a second keeper and orphan every session of
// the first. A lock file removed is taken again. If another keeper took it
// first, or the directory cannot be made again (logind removes
// /run/user/UID at logout), this one retires: it stops listening, never
// touching the path (now maybe the other keeper's), and serves the
// sessions it has until they end.

// keeperLockFD is the descriptor on which a keeper finds the lock its
// relay took (exec.Cmd.ExtraFiles[0]).
const keeperLockFD = 3

// keeperCheck is how often the keeper looks at its socket.
const keeperCheck = time.Second

// errRetired is wrapped, with net.ErrClosed, by Accept's error once the
// keeper has lost its place and retired.
var errRetired = errors.New("the keeper lost its socket's place and retired")

// holdKeeperLock checks that the keeper was handed the lock, and keeps it
// from the programs the keeper starts: one of them holding it after the
// keeper died would make every relay wait for a keeper that is gone.
func holdKeeperLock() error {
	unix.CloseOnExec(keeperLockFD)
	// The relay's flock is on the same open file: taking it again here
	// succeeds at once, and fails only for a descriptor that is not it.
	if err := unix.Flock(keeperLockFD, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fmt.Errorf("--keeper: descriptor %d is not the keeper lock a relay holds (%w); corkd serve --stdio starts the keeper", keeperLockFD, err)
	}
	return nil
}

// keeperListener is the keeper's unix listener, made again at the same
// path whenever the path no longer names it.
type keeperListener struct {
	path  string
	opts  listen.Options
	log   *slog.Logger
	conns chan net.Conn
	done  chan struct{} // closed by Close

	mu   sync.Mutex
	cur  net.Listener
	file [2]uint64 // device and inode of the socket file cur made
	err  error     // why Accept fails once done is closed
}

// keeperListen listens on addr, a unix:// URL, and keeps doing so.
func keeperListen(addr string, opts listen.Options) (*keeperListener, error) {
	path, ok := strings.CutPrefix(addr, "unix://")
	if !ok {
		return nil, fmt.Errorf("--keeper listens on one unix:// socket, not %q", addr)
	}
	l := &keeperListener{path: path, opts: opts, log: opts.Logger, conns: make(chan net.Conn), done: make(chan struct{}), err: net.ErrClosed}
	if err := l.relisten(); err != nil {
		return nil, err
	}
	go l.watch()
	return l, nil
}

func (l *keeperListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		l.mu.Lock()
		defer l.mu.Unlock()
		return nil, l.err
	}
}

// retired reports whether the listener retired (see retire).
func (l *keeperListener) retired() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return errors.Is(l.err, errRetired)
}

func (l *keeperListener) Close() error { return l.stop(net.ErrClosed) }

func (l *keeperListener) Addr() net.Addr { return &net.UnixAddr{Name: l.path, Net: "unix"} }

// stop closes the listener; Accept then returns err, which wraps
// net.ErrClosed so that the server stops accepting rather than retry.
func (l *keeperListener) stop(err error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.done:
		return nil
	default:
	}
	l.err = err
	close(l.done)
	if l.cur != nil {
		return l.cur.Close()
	}
	return nil
}

// retire stops the listener for good, leaving whatever is at its path
// (another keeper's socket, by now) where it is; Accept then returns an
// error wrapping errRetired and net.ErrClosed.
func (l *keeperListener) retire(reason error) {
	l.log.Error("the keeper cannot keep its socket; it accepts no more connections and serves the sessions it has until they end",
		"socket", l.path, "err", reason)
	l.mu.Lock()
	if l.cur != nil {
		keepPath(l.cur)
	}
	l.mu.Unlock()
	l.stop(fmt.Errorf("%w (%w): %v", net.ErrClosed, errRetired, reason))
}

// keepPath makes closing l leave its socket file: Go's UnixListener
// removes it by path, whoever's it has become.
func keepPath(l net.Listener) {
	if u, ok := l.(interface{ SetUnlinkOnClose(bool) }); ok {
		u.SetUnlinkOnClose(false)
	}
}

// relisten closes the current socket, if any, and listens anew at the
// path, in the user's own directory (made again if it went).
func (l *keeperListener) relisten() error {
	if err := ensurePrivateDir(filepath.Dir(l.path), os.Geteuid()); err != nil {
		return err
	}
	l.mu.Lock()
	old := l.cur
	l.cur = nil
	l.mu.Unlock()
	if old != nil {
		old.Close() // also unlinks the path, whatever is there now
	}
	nl, err := listen.Listen("unix://"+l.path, l.opts)
	if err != nil {
		return err
	}
	file, err := fileID(l.path)
	if err != nil {
		nl.Close()
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.done:
		nl.Close()
		return net.ErrClosed
	default:
	}
	l.cur, l.file = nl, file
	go l.serve(nl)
	return nil
}

// serve hands the connections nl accepts to Accept, until nl is closed.
func (l *keeperListener) serve(nl net.Listener) {
	for {
		c, err := nl.Accept()
		if err != nil {
			return
		}
		select {
		case l.conns <- c:
		case <-l.done:
			c.Close()
			return
		}
	}
}

// watch makes the socket again when its path no longer names it, and
// retires the listener when it cannot.
func (l *keeperListener) watch() {
	t := time.NewTicker(keeperCheck)
	defer t.Stop()
	for {
		select {
		case <-l.done:
			return
		case <-t.C:
		}
		if err := keepLock(l.path + ".lock"); err != nil {
			l.retire(err)
			return
		}
		l.mu.Lock()
		want := l.file
		l.mu.Unlock()
		if got, err := fileID(l.path); err == nil && got == want {
			continue
		}
		l.log.Warn("the keeper's socket was removed or replaced; making it again", "socket", l.path)
		if err := l.relisten(); err != nil && !errors.Is(err, net.ErrClosed) {
			l.retire(err)
			return
		}
	}
}

// keepLock checks that path still names the lock on keeperLockFD, and
// takes the file now there (made if need be) when it does not: the
// directory may have been removed and made again.
func keepLock(path string) error {
	var st unix.Stat_t
	if err := unix.Fstat(keeperLockFD, &st); err != nil {
		return fmt.Errorf("keeper lock: %w", err)
	}
	if got, err := fileID(path); err == nil && got == [2]uint64{st.Dev, st.Ino} {
		return nil
	}
	if err := ensurePrivateDir(filepath.Dir(path), os.Geteuid()); err != nil {
		return err
	}
	f, err := tryLock(path)
	if err != nil {
		return err
	}
	if f == nil {
		return fmt.Errorf("%s was made again and another keeper holds it", path)
	}
	defer f.Close() // the lock stays with the descriptor's copy
	return unix.Dup3(int(f.Fd()), keeperLockFD, unix.O_CLOEXEC)
}

// fileID returns the device and inode of path, not followed.
func fileID(path string) ([2]uint64, error) {
	st, err := os.Lstat(path)
	if err != nil {
		return [2]uint64{}, err
	}
	sys := st.Sys().(*syscall.Stat_t)
	return [2]uint64{sys.Dev, sys.Ino}, nil
}
