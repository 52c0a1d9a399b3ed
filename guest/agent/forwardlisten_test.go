package agent

import (
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// failingListener fails its first accepts as a process out of file
// descriptors does, then gives one connection, then is closed.
type failingListener struct {
	net.Listener
	fails int
	conn  net.Conn
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.fails > 0 {
		l.fails--
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	if c := l.conn; c != nil {
		l.conn = nil
		return c, nil
	}
	return nil, net.ErrClosed
}

// A listener that runs out of file descriptors for a moment goes on
// accepting: a burst of connections must not end a remote forward or an
// agent socket for good.
func TestAcceptEachOutlivesEMFILE(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	l := &failingListener{fails: 3, conn: a}
	got := make(chan net.Conn, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		acceptEach(l, func(string, ...any) {}, func(c net.Conn) { got <- c })
	}()
	select {
	case c := <-got:
		if c != a {
			t.Fatalf("handled %v, want the connection after the failures", c)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the connection after three failed accepts was not handled within 10s")
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("acceptEach did not return once the listener was closed")
	}
}
