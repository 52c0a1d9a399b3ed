package agent

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func unixPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	l, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	client, err = net.Dial("unix", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return <-accepted, client
}

// TestThreadConnReads: a socket read in the caller's thread gives the
// bytes sent, in order, then EOF when the peer closes.
func TestThreadConnReads(t *testing.T) {
	server, client := unixPair(t)
	c := newThreadConn(server)
	defer c.Close()
	if _, ok := c.(*threadConn); !ok {
		t.Fatalf("a unix socket was not wrapped: %T", c)
	}
	go func() {
		for i := range 100 {
			client.Write([]byte{byte(i)})
			time.Sleep(100 * time.Microsecond)
		}
		client.Close()
	}()
	got, err := io.ReadAll(c)
	if err != nil || len(got) != 100 {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	for i, b := range got {
		if b != byte(i) {
			t.Fatalf("byte %d is %d", i, b)
		}
	}
}

// TestThreadConnCloseEndsRead: closing the connection ends a Read waiting
// in poll, which holds the descriptor open.
func TestThreadConnCloseEndsRead(t *testing.T) {
	server, _ := unixPair(t)
	c := newThreadConn(server)
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 10))
		done <- err
	}()
	time.Sleep(10 * time.Millisecond) // let it reach poll; the test holds either way
	c.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Read after Close returned no error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Read still waiting 10s after Close")
	}
}

// TestThreadConnLeavesOthers: what is not a socket is read as before.
func TestThreadConnLeavesOthers(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if c := newThreadConn(r); c != io.ReadWriteCloser(r) {
		t.Fatalf("a pipe was wrapped: %T", c)
	}
}
