package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corkvm/cork/protocol/prototest"
)

// fakeVMM listens where a VMM's hybrid vsock socket would be and answers
// each CONNECT with handle.
func fakeVMM(t *testing.T, path string, handle func(c net.Conn, request string)) net.Listener {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	prototest.Serve(t, l, func(c net.Conn) {
		var req []byte
		b := make([]byte, 1)
		for {
			if _, err := c.Read(b); err != nil {
				return
			}
			if b[0] == '\n' {
				break
			}
			req = append(req, b[0])
		}
		handle(c, string(req))
	})
	return l
}

func dialWithin(path string, d time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return DialHybrid(ctx, path, 2675)
}

func TestHybridOK(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v.sock")
	fakeVMM(t, path, func(c net.Conn, req string) {
		if req != "CONNECT 2675" {
			c.Write([]byte("bad request\n"))
			return
		}
		// The guest's first bytes arrive in the same write as the OK.
		c.Write([]byte("OK 1073741824\nguest-first-bytes"))
		io.Copy(io.Discard, c)
	})
	c, err := dialWithin(path, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64)
	n, err := io.ReadAtLeast(c, buf, len("guest-first-bytes"))
	if err != nil || string(buf[:n]) != "guest-first-bytes" {
		t.Fatalf("after the handshake read %q, %v: the guest's first bytes must survive", buf[:n], err)
	}
}

func TestHybridRejectsReplies(t *testing.T) {
	for _, reply := range []string{"NOPE\n", "OK\n", "OK abc\n", "ok 5\n", "OK 99999999999\n", strings.Repeat("x", 100)} {
		path := filepath.Join(t.TempDir(), "v.sock")
		fakeVMM(t, path, func(c net.Conn, _ string) { c.Write([]byte(reply)); time.Sleep(time.Second) })
		_, err := dialWithin(path, 5*time.Second)
		if !errors.Is(err, ErrHybridReply) {
			t.Errorf("reply %q: got %v, want ErrHybridReply", reply, err)
		}
	}
}

// TestHybridRetriesUntilGuestListens: a reset before the reply, a reply
// without its newline, and a socket that is not there yet all mean "not
// ready": the dial retries until the guest answers.
func TestHybridRetriesUntilGuestListens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v.sock")
	type result struct {
		c   net.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := dialWithin(path, 10*time.Second)
		done <- result{c, err}
	}()
	time.Sleep(100 * time.Millisecond) // the VMM's socket appears late
	var attempts atomic.Int32
	fakeVMM(t, path, func(c net.Conn, _ string) {
		switch attempts.Add(1) {
		case 1: // the guest is not listening: closed without a word
		case 2:
			c.Write([]byte("OK 5")) // cut off before the newline
		default:
			c.Write([]byte("OK 5\n"))
			io.Copy(io.Discard, c)
		}
	})
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	r.c.Close()
	if got := attempts.Load(); got != 3 {
		t.Fatalf("%d attempts, want 3", got)
	}
}

func TestHybridDeadline(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v.sock")
	fakeVMM(t, path, func(c net.Conn, _ string) {}) // never a guest
	start := time.Now()
	_, err := dialWithin(path, 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "no guest answered") {
		t.Fatalf("got %v, want a deadline error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("gave up after %v, want about the deadline", d)
	}
	// A reply that never comes is bounded by the same deadline.
	path2 := filepath.Join(t.TempDir(), "v.sock")
	fakeVMM(t, path2, func(c net.Conn, _ string) { time.Sleep(10 * time.Second) })
	if _, err := dialWithin(path2, 300*time.Millisecond); err == nil {
		t.Fatal("a silent VMM was accepted")
	}
}

func TestDialAddresses(t *testing.T) {
	for _, tt := range []struct{ addr, msg string }{
		{"vsock://x:1", "bad context id"},
		{"vsock://3:port", "invalid port"},
		{"hvsock://:5", "no socket path"},
		{"hvsock:///tmp/v.sock:notaport", "bad port"},
		{"tcp://127.0.0.1:1", "unknown scheme"},
		{"/just/a/path", "no scheme"},
	} {
		_, err := Dial(context.Background(), tt.addr, Options{Timeout: time.Second})
		if err == nil || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s: got %v, want %q", tt.addr, err, tt.msg)
		}
	}
}
