package client

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/corkvm/cork/protocol"
)

// fakeAgent answers the handshake, then hands the connection to a handler:
// one tiny handler per behaviour under test, in memory.
func fakeAgent(t *testing.T, handle func(r *protocol.Reader, w *protocol.Writer, req protocol.Exec)) net.Conn {
	t.Helper()
	host, guest := net.Pipe()
	serveFake(guest, handle)
	return host
}

// serveFake is fakeAgent on the guest end of a connection given.
func serveFake(guest net.Conn, handle func(r *protocol.Reader, w *protocol.Writer, req protocol.Exec)) {
	hello := protocol.Hello{MinVersion: 1, MaxVersion: 1, Version: 1, Software: "fake"}
	serveHello(guest, hello, func(r *protocol.Reader, w *protocol.Writer, typ protocol.Type, p []byte) {
		if typ != protocol.TypeExec {
			return
		}
		var req protocol.Exec
		protocol.Decode(typ, p, &req)
		handle(r, w, req)
	})
}

// serveHello is a fake agent on guest: it answers the host's hello with
// hello, then hands the request that follows to handle, and closes guest
// when handle returns.
func serveHello(guest net.Conn, hello protocol.Hello, handle func(r *protocol.Reader, w *protocol.Writer, t protocol.Type, p []byte)) {
	go func() {
		defer guest.Close()
		r, w := protocol.NewReader(guest), protocol.NewWriter(guest)
		if typ, _, err := r.Next(); err != nil || typ != protocol.TypeHello {
			return
		}
		w.WriteJSON(protocol.TypeHello, &hello)
		typ, p, err := r.Next()
		if err != nil {
			return
		}
		handle(r, w, typ, p)
	}()
}

func runFake(t *testing.T, s *Session, handle func(*protocol.Reader, *protocol.Writer, protocol.Exec)) (protocol.Exit, error) {
	t.Helper()
	if s.Stdout == nil {
		s.Stdout = io.Discard
	}
	if s.Stderr == nil {
		s.Stderr = io.Discard
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return s.Run(ctx, fakeAgent(t, handle))
}

func TestNoExitIsAnError(t *testing.T) {
	_, err := runFake(t, &Session{Exec: protocol.Exec{Argv: []string{"x"}}}, func(r *protocol.Reader, w *protocol.Writer, _ protocol.Exec) {
		w.WriteJSON(protocol.TypeStarted, &protocol.Started{})
		w.WriteFrame(protocol.TypeStdout, []byte("partial"))
	})
	if !errors.Is(err, ErrNoExit) {
		t.Fatalf("got %v, want ErrNoExit", err)
	}
}

func TestAgentErrorReturned(t *testing.T) {
	_, err := runFake(t, &Session{Exec: protocol.Exec{Argv: []string{"x"}}}, func(r *protocol.Reader, w *protocol.Writer, _ protocol.Exec) {
		w.WriteJSON(protocol.TypeError, &protocol.Error{Kind: protocol.KindUser, Message: `unknown user "bob"`})
	})
	var perr *protocol.Error
	if !errors.As(err, &perr) || perr.Kind != protocol.KindUser {
		t.Fatalf("got %v, want the agent's user error", err)
	}
}

func TestVersionMismatchNamesBoth(t *testing.T) {
	host, guest := net.Pipe()
	go func() {
		defer guest.Close()
		r, w := protocol.NewReader(guest), protocol.NewWriter(guest)
		r.Next()
		w.WriteJSON(protocol.TypeHello, &protocol.Hello{MinVersion: 7, MaxVersion: 9, Version: 7})
	}()
	_, err := Hello(protocol.NewReader(host), protocol.NewWriter(host), "test")
	if err == nil || !strings.Contains(err.Error(), "versions 7 to 9") || !strings.Contains(err.Error(), "versions 1 to 2") {
		t.Fatalf("got %v, want a mismatch naming both versions", err)
	}
}

// TestStdinStaysInWindow: the host never has more stdin unacknowledged than
// the window the agent gave, and resumes on acks.
func TestStdinStaysInWindow(t *testing.T) {
	const window = 1000
	input := bytes.Repeat([]byte("0123456789"), 1000)
	var got bytes.Buffer
	exit, err := runFake(t, &Session{Exec: protocol.Exec{Argv: []string{"x"}, Stdin: true}, Stdin: bytes.NewReader(input)},
		func(r *protocol.Reader, w *protocol.Writer, _ protocol.Exec) {
			w.WriteJSON(protocol.TypeStarted, &protocol.Started{StdinWindow: window})
			for {
				typ, p, err := r.Next()
				if err != nil {
					return
				}
				switch typ {
				case protocol.TypeStdin:
					if len(p) > window {
						w.WriteJSON(protocol.TypeError, &protocol.Error{Kind: "test", Message: "window overrun"})
						return
					}
					got.Write(p)
					// Acknowledge late, one frame at a time.
					w.WriteFrame(protocol.TypeStdinAck, protocol.EncodeStdinAck(uint32(len(p))))
				case protocol.TypeStdinEOF:
					w.WriteJSON(protocol.TypeExit, &protocol.Exit{Code: 0})
					return
				}
			}
		})
	if err != nil || exit.Code != 0 || !bytes.Equal(got.Bytes(), input) {
		t.Fatalf("exit %+v, %v, %d of %d bytes", exit, err, got.Len(), len(input))
	}
}

// TestSizeSlotLatestWins: sizes put while the sender is busy collapse into
// the newest one; none is queued behind it.
func TestSizeSlotLatestWins(t *testing.T) {
	sl := NewSizeSlot()
	for i := uint16(1); i <= 100; i++ {
		sl.Put(protocol.WindowSize{Cols: i, Rows: i})
	}
	<-sl.Ready()
	s, ok := sl.Take()
	if !ok || s.Cols != 100 {
		t.Fatalf("took %v, %v; want 100x100", s, ok)
	}
	if _, ok := sl.Take(); ok {
		t.Fatal("slot still full after take")
	}
	select {
	case <-sl.Ready():
		t.Fatal("a stale wake-up is pending")
	default:
	}
}

// TestResizeFramesInOrderEndAtLast: every resize frame the agent sees is
// newer than the one before, and the last one is the last size put.
func TestResizeFramesInOrderEndAtLast(t *testing.T) {
	sl := NewSizeSlot()
	seen := make(chan protocol.WindowSize, 1000)
	go func() {
		for i := uint16(1); i <= 500; i++ {
			sl.Put(protocol.WindowSize{Cols: i, Rows: 50})
		}
	}()
	_, err := runFake(t, &Session{Exec: protocol.Exec{Argv: []string{"x"}, TTY: true}, Sizes: sl},
		func(r *protocol.Reader, w *protocol.Writer, _ protocol.Exec) {
			for {
				typ, p, err := r.Next()
				if err != nil {
					return
				}
				if typ == protocol.TypeResize {
					s, _ := protocol.DecodeResize(p)
					seen <- s
					if s.Cols == 500 {
						w.WriteJSON(protocol.TypeExit, &protocol.Exit{})
						return
					}
				}
			}
		})
	if err != nil {
		t.Fatal(err)
	}
	close(seen)
	last := uint16(0)
	for s := range seen {
		if s.Cols <= last {
			t.Fatalf("resize %d after %d: an older size was sent after a newer one", s.Cols, last)
		}
		last = s.Cols
	}
	if last != 500 {
		t.Fatalf("last resize %d, want 500", last)
	}
}

func TestPing(t *testing.T) {
	host, guest := net.Pipe()
	defer host.Close()
	go func() {
		defer guest.Close()
		r, w := protocol.NewReader(guest), protocol.NewWriter(guest)
		_, p, _ := r.Next()
		w.WriteFrame(protocol.TypePong, p)
		typ, p, _ := r.Next()
		if typ == protocol.TypePing {
			w.WriteFrame(protocol.TypePong, append(p, 'x')) // a wrong echo
		}
	}()
	r, w := protocol.NewReader(host), protocol.NewWriter(host)
	if err := Ping(r, w, []byte("abc")); err != nil {
		t.Fatalf("ping: %v", err)
	}
	if err := Ping(r, w, []byte("def")); err == nil || !strings.Contains(err.Error(), "defx") {
		t.Fatalf("a wrong echo: %v", err)
	}
}

// TestVersion1AgentCannotKeep: a version-1 agent runs plain sessions, and
// kept-session requests get an error that says why.
func TestVersion1AgentCannotKeep(t *testing.T) {
	ran := false
	_, err := runFake(t, &Session{Exec: protocol.Exec{Argv: []string{"x"}, TTY: true, Keep: true}},
		func(*protocol.Reader, *protocol.Writer, protocol.Exec) { ran = true })
	var ck *CannotKeepError
	if !errors.As(err, &ck) || !strings.Contains(err.Error(), "cannot keep sessions") || !strings.Contains(err.Error(), "fake") {
		t.Fatalf("got %v", err)
	}
	if ran {
		t.Fatal("the request was sent to an agent that cannot keep it")
	}
	host, guest := net.Pipe()
	go func() {
		defer guest.Close()
		r, w := protocol.NewReader(guest), protocol.NewWriter(guest)
		r.Next()
		w.WriteJSON(protocol.TypeHello, &protocol.Hello{MinVersion: 1, MaxVersion: 1, Version: 1, Software: "old corkd"})
		r.Next()
	}()
	if _, err := List(host, "test"); !errors.As(err, &ck) {
		t.Fatalf("List on a version-1 agent: %v", err)
	}
}

// TestPlainExecGoesWithTheHello: a plain exec request reaches the agent
// before the agent answers the hello, saving a round trip; a kept one
// waits for the agent's version.
func TestPlainExecGoesWithTheHello(t *testing.T) {
	for _, keep := range []bool{false, true} {
		host, guest := net.Pipe()
		ahead := make(chan bool, 1)
		go func() {
			defer guest.Close()
			r, w := protocol.NewReader(guest), protocol.NewWriter(guest)
			if typ, _, err := r.Next(); err != nil || typ != protocol.TypeHello {
				return
			}
			// Has the request come before our hello? Wait a little for
			// it, then answer the hello either way.
			next := make(chan protocol.Type, 1)
			go func() {
				typ, _, _ := r.Next()
				next <- typ
			}()
			select {
			case typ := <-next:
				ahead <- typ == protocol.TypeExec
			case <-time.After(time.Second):
				ahead <- false
				w.WriteJSON(protocol.TypeHello, &protocol.Hello{MinVersion: 1, MaxVersion: 2, Version: 2, Software: "fake"})
				<-next
				return
			}
			w.WriteJSON(protocol.TypeHello, &protocol.Hello{MinVersion: 1, MaxVersion: 2, Version: 2, Software: "fake"})
			w.WriteJSON(protocol.TypeStarted, &protocol.Started{Session: "0123456789abcdef"})
			w.WriteJSON(protocol.TypeExit, &protocol.Exit{Code: 3})
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s := &Session{Exec: protocol.Exec{Argv: []string{"x"}, Keep: keep}, Stdout: io.Discard, Stderr: io.Discard}
		exit, err := s.Run(ctx, host)
		cancel()
		if got := <-ahead; got == keep {
			t.Fatalf("keep=%v: the request came before the agent's hello: %v", keep, got)
		}
		if !keep && (err != nil || exit.Code != 3) {
			t.Fatalf("plain exec: exit %+v, %v", exit, err)
		}
	}
}
