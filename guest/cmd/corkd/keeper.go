package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corkvm/cork/guest/listen"
)

// corkd serve --stdio (what cork --machine runs through smolvm machine
// exec) dies with its exec, and a kept session must not. So it hands kept
// sessions to a long-lived corkd in the guest, the keeper, listening on a
// unix socket, and starts it first when none runs: in a session of its
// own, its output to a log file beside the socket, not to the exec's pipes.
//
// The keeper holds the lock beside its socket for its life, so that one
// keeper at most runs for a socket: a relay that finds no socket but the
// lock held waits for the keeper to make its socket again (keeperlisten.go)
// rather than start a second one.

// keeperStart bounds a relay's wait for the keeper: for one it started to
// listen, or for the lock another relay or a keeper holds.
const keeperStart = 5 * time.Second

// errNotKeeper is wrapped by the error of a dial that reached a listener
// of another uid.
var errNotKeeper = errors.New("not this user's keeper")

// keptVia returns the connection to the keeper, starting it if none
// listens on sock.
func keptVia(sock, logLevel string, log *slog.Logger) func() (io.ReadWriteCloser, error) {
	return func() (io.ReadWriteCloser, error) {
		if err := ensurePrivateDir(filepath.Dir(sock), os.Geteuid()); err != nil {
			return nil, err
		}
		if c, err := dialKeeper(sock); err == nil || errors.Is(err, errNotKeeper) {
			return c, err
		}
		if c := dialElsewhere(sock, "/run/user"); c != nil {
			return c, nil
		}
		deadline := time.Now().Add(keeperStart)
		for {
			c, err := dialKeeper(sock)
			if err == nil || errors.Is(err, errNotKeeper) {
				return c, err
			}
			lock, err := tryLock(sock + ".lock")
			if err != nil {
				return nil, err
			}
			if lock != nil {
				return startKeeper(sock, lock, logLevel, log)
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("no keeper listens at %s, and %s.lock has been held for %s "+
					"(by a keeper that lost its socket, or a relay starting one); see %s.log", sock, sock, keeperStart, sock)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// dialElsewhere returns a connection to this user's keeper at another of
// its default places than sock, when sock is one and a keeper listens
// there, in a directory that passes the same checks as sock's.
func dialElsewhere(sock, runUser string) net.Conn {
	uid := os.Geteuid()
	places := keepSocketsFor(uid, runUser)
	if !slices.Contains(places, sock) {
		return nil
	}
	for _, other := range places {
		dir := filepath.Dir(other)
		if other == sock || checkParent(filepath.Dir(dir), uid) != nil || checkPrivateDir(dir, uid) != nil {
			continue
		}
		if c, err := dialKeeper(other); err == nil {
			return c
		}
	}
	return nil
}

// dialKeeper connects to sock and checks, before a byte is sent, that the
// listener is this user's: a socket put in the keeper's place would
// otherwise receive the session's Exec, environment and keystrokes. Root's
// is refused too: the keeper of a user is that user's, and a root process
// at that path is not one.
func dialKeeper(sock string) (net.Conn, error) {
	c, err := net.Dial("unix", sock)
	if err != nil {
		return nil, err
	}
	cred, err := listen.PeerCred(c.(*net.UnixConn))
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("%s: reading the listener's credentials: %w", sock, err)
	}
	if euid := uint32(os.Geteuid()); cred.Uid != euid {
		c.Close()
		return nil, fmt.Errorf("%w: %s is served by %s (pid %d), not by uid %d: refusing to send it the session",
			errNotKeeper, sock, describeUID(int(cred.Uid)), cred.Pid, euid)
	}
	return c, nil
}

// tryLock takes the keeper lock without waiting: nil, nil when another
// process holds it.
func tryLock(path string) (*os.File, error) {
	f, err := openPrivate(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	switch err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); {
	case err == nil:
		return f, nil
	case errors.Is(err, unix.EWOULDBLOCK):
		f.Close()
		return nil, nil
	default:
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
}

// startKeeper starts the keeper, handing it the lock (held), and returns
// a connection to it once it listens. The lock is only closed here, never
// unlocked: the keeper's descriptor shares it and holds it from now on.
func startKeeper(sock string, lock *os.File, logLevel string, log *slog.Logger) (io.ReadWriteCloser, error) {
	defer lock.Close()
	if c, err := dialKeeper(sock); err == nil || errors.Is(err, errNotKeeper) {
		return c, err
	}
	if os.Getpid() == 1 {
		log.Warn("corkd is this exec's PID 1: when the exec ends, the keeper and its sessions end with its pid namespace")
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	logf, err := openPrivate(sock+".log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	// Descriptors this process inherited without close-on-exec (the
	// exec's own pipes, say) would live on in the keeper and keep the
	// exec from ending; Go's own are close-on-exec already.
	if err := unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC); err != nil {
		log.Warn("cannot mark inherited descriptors close-on-exec; the keeper may hold them", "err", err)
	}
	cmd := exec.Command(self, "serve", "--keeper", "--listen", "unix://"+sock, "--pid-file", sock+".pid", "--log-level", logLevel)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{lock} // keeperLockFD
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the keeper: %w", err)
	}
	log.Info("started the corkd that keeps sessions", "pid", cmd.Process.Pid, "socket", sock)
	return awaitKeeper(sock, cmd)
}

// awaitKeeper waits for the keeper cmd to listen on sock.
func awaitKeeper(sock string, cmd *exec.Cmd) (io.ReadWriteCloser, error) {
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(keeperStart)
	for {
		c, err := dialKeeper(sock)
		if err == nil {
			cmd.Process.Release()
			return c, nil
		}
		if errors.Is(err, errNotKeeper) {
			return nil, err
		}
		select {
		case err := <-exited:
			return nil, fmt.Errorf("the keeper exited at start (%v); see %s.log", err, sock)
		default:
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the keeper did not listen at %s within %s; see %s.log", sock, keeperStart, sock)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
