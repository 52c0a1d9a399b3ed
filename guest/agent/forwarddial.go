package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/corkvm/cork/guest/account"
	"github.com/corkvm/cork/protocol"
)

// dialAs connects to address in the guest for a stream as acct: the socket
// is made on a thread that has taken acct's uid, gid and groups, so the
// kernel checks acct's permissions and records acct as the socket's owner.
// That owner is what SO_PEERCRED tells the program behind a unix socket
// and what a firewall's uid-owner rule matches for TCP. ctx bounds the
// dial.
func dialAs(ctx context.Context, acct *account.Account, network uint8, address string) (net.Conn, error) {
	switch network {
	case protocol.NetUnix:
		return dialUnixAs(address, acct)
	case protocol.NetTCP:
		return dialTCPAs(ctx, acct, address)
	}
	return nil, fmt.Errorf("corkd connects only to TCP addresses and unix sockets, not network %d", network)
}

// asUser runs fn on a thread of its own that has taken acct's identity,
// and returns fn's error or why the identity could not be taken. The
// thread is locked and never unlocked: Go ends it with its goroutine, so
// nothing else ever runs as acct.
func asUser(acct *account.Account, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		err := becomeUser(acct)
		if err == nil {
			err = fn()
		}
		errc <- err
	}()
	return <-errc
}

// becomeUser gives the calling thread acct's groups, then its real,
// effective and saved gid and uid. The system calls are raw on purpose:
// unix.Setresuid and syscall.Setresuid change every thread of the process
// (POSIX semantics, through the runtime's AllThreadsSyscall), and Linux
// keeps credentials per thread, so the raw calls change this one alone.
// Unlike setfsuid, this changes the uid that sockets record.
func becomeUser(acct *account.Account) error {
	if uint32(os.Geteuid()) != 0 || acct.UID == 0 {
		return nil // corkd serves only its own user (canServe), or root wants root
	}
	var groups unsafe.Pointer
	if len(acct.Groups) > 0 {
		groups = unsafe.Pointer(&acct.Groups[0]) // gid_t is 32 bits on amd64 and arm64
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(acct.Groups)), uintptr(groups), 0); e != 0 {
		return fmt.Errorf("setting the groups of %s: %w", acct.Name, e)
	}
	gid, uid := uintptr(acct.GID), uintptr(acct.UID)
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, gid, gid, gid); e != 0 {
		return fmt.Errorf("taking gid %d for %s: %w", acct.GID, acct.Name, e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uid, uid, uid); e != 0 {
		return fmt.Errorf("taking uid %d for %s: %w", acct.UID, acct.Name, e)
	}
	if r, e, s := unix.Getresuid(); r != int(acct.UID) || e != r || s != r {
		return fmt.Errorf("taking uid %d for %s: the thread has %d, %d, %d", acct.UID, acct.Name, r, e, s)
	}
	return nil
}

// dialUnixAs connects to the unix socket at path as acct: connect(2)
// checks acct's permissions on the socket and the directories above it,
// and the listener's SO_PEERCRED names acct.
func dialUnixAs(path string, acct *account.Account) (net.Conn, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("unix socket %q: the path must be absolute", path)
	}
	var c net.Conn
	err := asUser(acct, func() (err error) {
		c, err = connectUnix(path)
		return err
	})
	return c, err
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

// dialTCPAs connects to address (host:port) as acct, trying each of the
// host's addresses in turn within ctx.
func dialTCPAs(ctx context.Context, acct *account.Account, address string) (net.Conn, error) {
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
		c, err = connectTCPAs(ctx, acct, netip.AddrPortFrom(ip.Unmap(), uint16(pn)))
		if err == nil || ctx.Err() != nil {
			return c, err
		}
	}
	return nil, err
}

// connectTCPAs makes the socket and starts its connect as acct, then waits
// for the connect through Go's poller, not on a thread, until ctx ends.
func connectTCPAs(ctx context.Context, acct *account.Account, ap netip.AddrPort) (net.Conn, error) {
	opErr := func(call string, err error) error {
		return &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(ap), Err: os.NewSyscallError(call, err)}
	}
	var fd int
	var call string
	err := asUser(acct, func() (err error) {
		fd, call, err = startConnect(ap)
		return err
	})
	if err != nil {
		return nil, opErr(call, err)
	}
	f := os.NewFile(uintptr(fd), ap.String())
	defer f.Close()
	if err := waitConnected(ctx, f); err != nil {
		return nil, opErr("connect", err)
	}
	return net.FileConn(f)
}

// startConnect makes a non-blocking TCP socket and starts connecting it
// to ap; on failure it names the call that failed.
func startConnect(ap netip.AddrPort) (fd int, call string, err error) {
	var sa unix.Sockaddr
	family := unix.AF_INET6
	if ap.Addr().Is4() {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	} else {
		sa6 := &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
		if z := ap.Addr().Zone(); z != "" {
			ifi, err := net.InterfaceByName(z)
			if err != nil {
				return -1, "socket", err
			}
			sa6.ZoneId = uint32(ifi.Index)
		}
		sa = sa6
	}
	fd, err = unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.IPPROTO_TCP)
	if err != nil {
		return -1, "socket", err
	}
	if err = unix.Connect(fd, sa); err != nil && err != unix.EINPROGRESS {
		unix.Close(fd)
		return -1, "connect", err
	}
	return fd, "", nil
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
