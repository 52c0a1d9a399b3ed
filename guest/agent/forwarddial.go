package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/corkvm/cork/guest/account"
	"github.com/corkvm/cork/protocol"
)

// dialAs connects to address in the guest for a stream as t's account: the
// socket is made on a thread that has taken the account's uid, gid and
// groups, so the kernel checks its permissions and records it as the
// socket's owner. That owner is what SO_PEERCRED tells the program behind
// a unix socket and what a firewall's uid-owner rule matches for TCP. ctx
// bounds the dial.
func dialAs(ctx context.Context, t *userThread, network uint8, address string) (net.Conn, error) {
	switch network {
	case protocol.NetUnix:
		return dialUnixAs(t, address)
	case protocol.NetTCP:
		return dialTCPAs(ctx, t, address)
	}
	return nil, fmt.Errorf("corkd connects only to TCP addresses and unix sockets, not network %d", network)
}

// asUser runs fn on a thread of its own that has taken acct's identity,
// and returns fn's error or why the identity could not be taken.
func asUser(acct *account.Account, fn func() error) error {
	t := newUserThread(acct)
	defer t.stop()
	_, err := t.do(context.Background(), func() (io.Closer, error) { return nil, fn() })
	return err
}

// userThread runs functions on one thread that has taken an account's
// identity. A forwarding connection's dials share one, so that a dial
// costs a hand-off between goroutines, not a thread made and ended. The
// thread is locked and never unlocked: Go ends it with its goroutine,
// after stop or once it has been idle a while, so nothing else ever runs
// as the account.
type userThread struct {
	acct *account.Account
	wake chan struct{} // a job was queued, or stop was called

	mu      sync.Mutex
	jobs    []func(identityErr error)
	running bool // the thread's goroutine runs, and takes jobs
	stopped bool
}

// userThreadIdle is how long a user thread waits for work before it ends.
const userThreadIdle = 5 * time.Second

// maxQueuedJobs bounds the jobs waiting for one user thread: behind a
// job that does not return (a connect through a hung network or FUSE
// mount), the dials that gave up waiting would otherwise pile up.
const maxQueuedJobs = 256

func newUserThread(acct *account.Account) *userThread {
	return &userThread{acct: acct, wake: make(chan struct{}, 1)}
}

// do runs fn as t's account and returns what it made and its error, or why
// the identity could not be taken. When corkd's own identity is the
// account's already, fn runs on the calling goroutine. When ctx ends first,
// do returns ctx's error at once: fn then does not run, or, if it had
// begun, what it makes is closed.
func (t *userThread) do(ctx context.Context, fn func() (io.Closer, error)) (io.Closer, error) {
	if !mustSwitch(t.acct) {
		return fn()
	}
	type result struct {
		made io.Closer
		err  error
	}
	done := make(chan result, 1)
	job := func(identityErr error) {
		switch {
		case identityErr != nil:
			done <- result{err: identityErr}
		case ctx.Err() != nil:
			done <- result{err: ctx.Err()}
		default:
			made, err := fn()
			done <- result{made, err}
		}
	}
	if err := t.queue(job); err != nil {
		return nil, err
	}
	select {
	case r := <-done:
		return r.made, r.err
	case <-ctx.Done():
		go func() {
			if r := <-done; r.made != nil {
				r.made.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// queue adds job to t's queue, starting its thread if none runs.
func (t *userThread) queue(job func(identityErr error)) error {
	t.mu.Lock()
	if len(t.jobs) >= maxQueuedJobs {
		t.mu.Unlock()
		return fmt.Errorf("%d connects as %s wait behind one that has not ended", len(t.jobs), t.acct.Name)
	}
	t.jobs = append(t.jobs, job)
	if !t.running {
		t.running = true
		go t.run()
	}
	t.mu.Unlock()
	t.signal()
	return nil
}

// stop ends the thread once the jobs queued are done.
func (t *userThread) stop() {
	t.mu.Lock()
	t.stopped = true
	t.mu.Unlock()
	t.signal()
}

func (t *userThread) signal() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// run locks a thread other than the main one and serves t's jobs on it.
// The kernel checks kill(2) and /proc/PID against the main thread's
// credentials, so on the main thread the work moves to another goroutine,
// which this one's lock keeps off the main thread until it has a thread
// of its own.
func (t *userThread) run() {
	runtime.LockOSThread()
	if unix.Gettid() != unix.Getpid() {
		t.serve()
		return
	}
	moved := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		close(moved)
		t.serve()
	}()
	<-moved
	runtime.UnlockOSThread()
}

// serve takes the identity on the locked thread, then runs the jobs queued
// until t stops or idles. A thread that failed to take it answers every
// job with why, and ends.
func (t *userThread) serve() {
	identityErr := becomeUser(t.acct)
	idle := time.NewTimer(userThreadIdle)
	defer idle.Stop()
	idled := false
	for {
		t.mu.Lock()
		jobs := t.jobs
		t.jobs = nil
		if len(jobs) == 0 && (t.stopped || idled || identityErr != nil) {
			t.running = false
			t.mu.Unlock()
			return
		}
		t.mu.Unlock()
		for _, job := range jobs {
			job(identityErr)
		}
		if len(jobs) > 0 {
			idle.Reset(userThreadIdle)
			idled = false
			continue
		}
		select {
		case <-t.wake:
		case <-idle.C:
			idled = true
		}
	}
}

// mustSwitch reports whether acting as acct takes a change of identity:
// corkd runs as root and acct is not root. A corkd that is not root serves
// only its own user (canServe).
func mustSwitch(acct *account.Account) bool {
	return uint32(os.Geteuid()) == 0 && acct.UID != 0
}

// becomeUser gives the calling thread acct's groups, then its effective
// gid and uid. The system calls are raw on purpose: unix.Setresuid and
// syscall.Setresuid change every thread of the process (POSIX semantics,
// through the runtime's AllThreadsSyscall), and Linux keeps credentials
// per thread, so the raw calls change this one alone. The effective uid
// is what the kernel checks permissions against (through the fsuid that
// follows it) and what sockets record, SO_PEERCRED included; the real and
// saved uids stay root's, since kill(2) and prlimit(2) let a user reach a
// thread whose real or saved uid is theirs, and the thread is corkd's.
func becomeUser(acct *account.Account) error {
	if !mustSwitch(acct) {
		return nil
	}
	var groups unsafe.Pointer
	if len(acct.Groups) > 0 {
		groups = unsafe.Pointer(&acct.Groups[0]) // gid_t is 32 bits on amd64 and arm64
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(acct.Groups)), uintptr(groups), 0); e != 0 {
		return fmt.Errorf("setting the groups of %s: %w", acct.Name, e)
	}
	keep := ^uintptr(0) // -1: leave the id as it is
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, keep, uintptr(acct.GID), keep); e != 0 {
		return fmt.Errorf("taking gid %d for %s: %w", acct.GID, acct.Name, e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, keep, uintptr(acct.UID), keep); e != 0 {
		return fmt.Errorf("taking uid %d for %s: %w", acct.UID, acct.Name, e)
	}
	if r, e, s := unix.Getresuid(); r != 0 || e != int(acct.UID) || s != 0 {
		return fmt.Errorf("taking uid %d for %s: the thread has %d, %d, %d", acct.UID, acct.Name, r, e, s)
	}
	return nil
}

// dialUnixAs connects to the unix socket at path as t's account: connect(2)
// checks its permissions on the socket and the directories above it, and
// the listener's SO_PEERCRED names it.
func dialUnixAs(t *userThread, path string) (net.Conn, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("unix socket %q: the path must be absolute", path)
	}
	c, err := t.do(context.Background(), func() (io.Closer, error) { return connectUnix(path) })
	if err != nil {
		return nil, err
	}
	return c.(net.Conn), nil
}

// connectUnix connects without waiting: a listener whose backlog is full
// is an error at once (EAGAIN), not a thread held until it accepts.
func connectUnix(path string) (net.Conn, error) {
	opErr := func(call string, err error) error {
		return &net.OpError{Op: "dial", Net: "unix", Addr: &net.UnixAddr{Name: path, Net: "unix"}, Err: os.NewSyscallError(call, err)}
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, opErr("socket", err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		if err == unix.EAGAIN {
			return nil, opErr("connect", errors.New("the listener's backlog is full"))
		}
		return nil, opErr("connect", err)
	}
	return net.FileConn(f)
}

// dialTCPAs connects to address (host:port) as t's account, trying each of
// the host's addresses in turn within ctx.
func dialTCPAs(ctx context.Context, t *userThread, address string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	if host == "" {
		host = "127.0.0.1" // as net.Dial takes ":80": the local system
	}
	pn, err := net.DefaultResolver.LookupPort(ctx, "tcp", port)
	if err != nil {
		return nil, err
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	for _, ip := range ips {
		var c net.Conn
		c, err = connectTCPAs(ctx, t, netip.AddrPortFrom(ip.Unmap(), uint16(pn)))
		if err == nil || ctx.Err() != nil {
			return c, err
		}
	}
	return nil, err
}

// connectTCPAs makes the socket and starts its connect as t's account,
// then waits for the connect through Go's poller, not on t's thread, until
// ctx ends.
func connectTCPAs(ctx context.Context, t *userThread, ap netip.AddrPort) (net.Conn, error) {
	opErr := func(err error) error {
		return &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(ap), Err: err}
	}
	made, err := t.do(ctx, func() (io.Closer, error) {
		fd, err := startConnect(ap)
		if err != nil {
			return nil, err
		}
		return os.NewFile(uintptr(fd), ap.String()), nil
	})
	if err != nil {
		return nil, opErr(err)
	}
	f := made.(*os.File)
	defer f.Close()
	if err := waitConnected(ctx, f); err != nil {
		return nil, opErr(os.NewSyscallError("connect", err))
	}
	return net.FileConn(f)
}

// startConnect makes a non-blocking TCP socket and starts connecting it
// to ap; its error names the call that failed.
func startConnect(ap netip.AddrPort) (fd int, err error) {
	var sa unix.Sockaddr
	family := unix.AF_INET6
	if ap.Addr().Is4() {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	} else {
		sa6 := &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
		if z := ap.Addr().Zone(); z != "" {
			ifi, err := net.InterfaceByName(z)
			if err != nil {
				return -1, os.NewSyscallError("socket", err)
			}
			sa6.ZoneId = uint32(ifi.Index)
		}
		sa = sa6
	}
	fd, err = unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.IPPROTO_TCP)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	if err = unix.Connect(fd, sa); err != nil && err != unix.EINPROGRESS {
		unix.Close(fd)
		return -1, os.NewSyscallError("connect", err)
	}
	return fd, nil
}

// waitConnected waits until f's connect ends, or ctx does. Only ctx's end
// sets f's deadline, so a wait cut short always has ctx.Err to report.
func waitConnected(ctx context.Context, f *os.File) error {
	stop := context.AfterFunc(ctx, func() { f.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var connErr error
	err = rc.Write(func(fd uintptr) bool {
		soErr, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		switch {
		case err != nil:
			connErr = err
		case soErr != 0:
			connErr = unix.Errno(soErr)
		default:
			_, err := unix.Getpeername(int(fd))
			if err == unix.ENOTCONN {
				return false // still connecting: wait until writable
			}
			connErr = err
		}
		return true
	})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	return connErr
}
