package prototest

import (
	"net"
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// SocketPair returns two connected unix stream sockets, closed when the
// test ends. It stands where net.Pipe would for a test of code that cares
// that its connection is a socket: one with a kernel buffer, a descriptor
// to poll, splice and half close, as every transport cork has gives it.
func SocketPair(t testing.TB) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	// Under ForkLock, as the net package makes its sockets where
	// SOCK_CLOEXEC is missing (macOS): a program started meanwhile must
	// not inherit an end and keep the pair open.
	syscall.ForkLock.RLock()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err == nil {
		unix.CloseOnExec(fds[0])
		unix.CloseOnExec(fds[1])
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close() // FileConn holds a copy of its own
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

// Serve accepts connections on l until the test ends and runs handle on
// each in a goroutine of its own, closing the connection when handle
// returns: the accept loop of a fake peer (a corkd, a VMM, a service
// forwarded to).
func Serve(t testing.TB, l net.Listener, handle func(net.Conn)) {
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
}

// OpenFds counts this process's open file descriptors, for a test that a
// peer who cuts or lies leaves none open; it skips the test where /proc
// cannot tell.
func OpenFds(t testing.TB) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("counting fds: %v", err)
	}
	return len(fds)
}
