package listen

import (
	"bytes"
	"io"
	"log/slog"
	"syscall"
	"testing"
	"time"

	"github.com/corkvm/cork/guest/agent"
	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/prototest"
)

// fakePort is a serial port: what the host writes arrives in chunks, a nil
// chunk reads as end-of-file once (the host went away), and what the guest
// writes goes to the host through a pipe.
type fakePort struct {
	in     chan []byte
	cur    []byte
	out    *io.PipeWriter
	closed chan struct{}
}

func (p *fakePort) Read(b []byte) (int, error) {
	if len(p.cur) == 0 {
		select {
		case c := <-p.in:
			if c == nil {
				return 0, io.EOF
			}
			p.cur = c
		case <-p.closed:
			return 0, io.ErrClosedPipe
		}
	}
	n := copy(b, p.cur)
	p.cur = p.cur[n:]
	return n, nil
}

func (p *fakePort) Write(b []byte) (int, error) { return p.out.Write(b) }
func (p *fakePort) Close() error                { close(p.closed); p.out.Close(); return nil }

// host is the other end of the port: what it sends arrives one frame per
// chunk.
type host struct {
	*prototest.Peer
	port *fakePort
}

type portWriter struct{ p *fakePort }

func (w portWriter) Write(b []byte) (int, error) { w.p.in <- bytes.Clone(b); return len(b), nil }

func (h *host) send(t protocol.Type, v any) { h.Send(t, v) }

// session runs argv and returns its output up to the exit frame.
func (h *host) session(argv ...string) (string, protocol.Exit) {
	h.send(protocol.TypeHello, &protocol.Hello{MinVersion: 1, MaxVersion: 1})
	h.send(protocol.TypeExec, &protocol.Exec{Argv: argv})
	out, _, exit := h.Output(nil)
	return out, exit
}

func newSerialPair(t *testing.T) (*host, *serialListener) {
	pr, pw := io.Pipe()
	port := &fakePort{in: make(chan []byte, 64), out: pw, closed: make(chan struct{})}
	l := newSerialListener(port, "fake", slog.New(slog.DiscardHandler))
	srv := agent.New(agent.Config{DisconnectGrace: 200 * time.Millisecond})
	go srv.Serve(l)
	t.Cleanup(func() { l.Close() })
	conn := struct {
		io.Reader
		io.Writer
		io.Closer
	}{pr, portWriter{port}, pr}
	return &host{Peer: prototest.NewPeer(t, conn), port: port}, l
}

func TestSerialSessionsOneAfterAnother(t *testing.T) {
	h, _ := newSerialPair(t)
	for i, word := range []string{"one", "two", "three"} {
		out, exit := h.session("sh", "-c", "echo "+word+"; exit "+string(rune('0'+i)))
		if out != word+"\n" || exit.Code != i {
			t.Fatalf("session %d: %q, %+v", i, out, exit)
		}
	}
}

func TestSerialSurvivesGarbageAndLeftovers(t *testing.T) {
	h, _ := newSerialPair(t)
	h.port.in <- []byte("\x7fnot a frame at all\x01\x00\x00")
	if out, _ := h.session("echo", "after garbage"); out != "after garbage\n" {
		t.Fatalf("after garbage: %q", out)
	}
	// Frames a host sends after the exit belong to no session.
	h.send(protocol.TypeResize, protocol.EncodeResize(protocol.WindowSize{Cols: 1, Rows: 1}))
	h.send(protocol.TypeStdin, []byte("stale"))
	if out, _ := h.session("echo", "after leftovers"); out != "after leftovers\n" {
		t.Fatalf("after leftovers: %q", out)
	}
}

func TestSerialHostGoneEndsSession(t *testing.T) {
	h, _ := newSerialPair(t)
	h.send(protocol.TypeHello, &protocol.Hello{MinVersion: 1, MaxVersion: 1})
	h.send(protocol.TypeExec, &protocol.Exec{Argv: []string{"sleep", "600"}})
	var st protocol.Started
	protocol.Decode(protocol.TypeStarted, h.Expect(protocol.TypeStarted), &st)
	h.port.in <- nil // the host disconnects; the port reads end-of-file
	h.port.in <- nil // and again while nobody is there
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(st.PID, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("session's program %d still runs after its host went away", st.PID)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if out, _ := h.session("echo", "next host"); out != "next host\n" {
		t.Fatalf("next host: %q", out)
	}
}
