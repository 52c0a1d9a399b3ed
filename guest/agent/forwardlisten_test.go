package agent

import (
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corkvm/cork/protocol/prototest"
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

// A connection to a guest listener counts against its maker's uid: the
// connecting socket's owner, which corkd finds while the socket is held.
// One already closed shows no owner (the kernel's tables show a closed
// socket as uid 0's, root's): refused.
func TestConnectingUID(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, closed := range []bool{false, true} {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if closed {
			c.Close()
		} else {
			defer c.Close()
		}
		a, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		uid, err := connectingUID(a)
		switch {
		case closed && err == nil:
			t.Fatalf("a closed socket's connection counted against uid %d", uid)
		case !closed && (err != nil || uid != uint32(os.Geteuid())):
			t.Fatalf("uid %d, %v; want %d", uid, err, os.Geteuid())
		}
	}
	a, _ := prototest.SocketPair(t)
	if uid, err := connectingUID(a); err != nil || uid != uint32(os.Geteuid()) {
		t.Fatalf("a unix socket's peer: uid %d, %v; want %d", uid, err, os.Geteuid())
	}
}

// onOwnThread never runs its function on the main thread, which Go would
// park with what the function changed instead of ending it. Each try's
// goroutine is a new one that the scheduler may give any thread.
func TestOnOwnThreadNeverTheMainThread(t *testing.T) {
	for try := range 200 {
		tids := make(chan int, 1)
		go onOwnThread(func() { tids <- unix.Gettid() })
		if tid := <-tids; tid == os.Getpid() {
			t.Fatalf("try %d ran on the main thread", try)
		}
	}
}
