package streams

import (
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/prototest"
)

func earlyConfig(window uint32, accept func(uint8, string) (io.ReadWriteCloser, error)) Config {
	c := config(window, accept)
	c.Early = true
	return c
}

// gated returns an Accept that waits for the gate before it answers, as a
// slow dial does: with early data, the opener has written by then.
func gated(t *testing.T, gate <-chan struct{}, refuse bool) func(uint8, string) (io.ReadWriteCloser, error) {
	return func(n uint8, a string) (io.ReadWriteCloser, error) {
		<-gate
		if refuse {
			return nil, errors.New("dial tcp a:1: connection refused")
		}
		return echo(t)(n, a)
	}
}

// socketMuxes is pair on a socket pair: the kernel's buffers stand between
// the two Muxes, whose readers write answers, as they do between cork and
// corkd (net.Pipe would make each such write wait for the other reader).
func socketMuxes(t *testing.T, host, guest Config) (*Mux, *Mux) {
	t.Helper()
	a, b := prototest.SocketPair(t)
	return joined(t, a, b, host, guest)
}

func draining(m *Mux) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.draining)
}

func TestEarlyDataGoesBeforeTheAnswer(t *testing.T) {
	gate := make(chan struct{})
	mh, _ := socketMuxes(t, earlyConfig(protocol.EarlyWindow, nil), earlyConfig(protocol.EarlyWindow, gated(t, gate, false)))
	s, err := mh.Open(protocol.NetTCP, "a:1")
	if err != nil {
		t.Fatal(err)
	}
	// The whole early window goes while the guest is still connecting.
	request := strings.Repeat("r", protocol.EarlyWindow)
	if _, err := s.Write([]byte(request)); err != nil {
		t.Fatal(err)
	}
	if err := s.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	close(gate)
	if got := readAll(t, s); string(got) != request {
		t.Fatalf("echoed %d bytes, want %d", len(got), len(request))
	}
	if err := s.Answer(); err != nil {
		t.Fatalf("Answer: %v", err)
	}
}

func TestEarlyDataRefused(t *testing.T) {
	gate := make(chan struct{})
	mh, mg := socketMuxes(t, earlyConfig(1<<16, nil), earlyConfig(1<<16, gated(t, gate, true)))
	s, err := mh.Open(protocol.NetTCP, "a:1")
	if err != nil {
		t.Fatal(err)
	}
	s.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
	s.CloseWrite()
	close(gate)
	var re *RefusedError
	if _, err := s.Read(make([]byte, 1)); !errors.As(err, &re) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("Read: %v, want the refusal", err)
	}
	if err := s.Answer(); !errors.As(err, &re) {
		t.Fatalf("Answer: %v, want the refusal", err)
	}
	if _, err := s.Write([]byte("x")); !errors.As(err, &re) {
		t.Fatalf("Write after the refusal: %v", err)
	}
	// The opener's close frees the refused id on the guest's side.
	waitFor(t, func() bool { return draining(mg) == 0 && mg.Streams() == 0 && mh.Streams() == 0 }, "the refused stream to be freed on both sides")
	if mg.Err() != nil {
		t.Fatalf("the refusal ended the connection: %v", mg.Err())
	}
}

// An opener that closes a stream while the other side connects gets its
// answer all the same, and both sides free the id.
func TestEarlyCloseBeforeTheAnswer(t *testing.T) {
	for _, refuse := range []bool{false, true} {
		gate := make(chan struct{})
		mh, mg := socketMuxes(t, earlyConfig(1<<16, nil), earlyConfig(1<<16, gated(t, gate, refuse)))
		s, err := mh.Open(protocol.NetTCP, "a:1")
		if err != nil {
			t.Fatal(err)
		}
		s.Write([]byte("never mind"))
		s.Close()
		waitFor(t, func() bool { return mg.Streams() == 1 }, "the open to reach the guest")
		close(gate)
		waitFor(t, func() bool { return draining(mg) == 0 && mg.Streams() == 0 && mh.Streams() == 0 }, "the closed stream to be freed on both sides")
		if mg.Err() != nil || mh.Err() != nil {
			t.Fatalf("refuse %v: the connection ended: %v, %v", refuse, mg.Err(), mh.Err())
		}
	}
}

// Opens, early data, refusals and closes racing each other leave both
// sides with nothing open and the connection up.
func TestEarlyDataRaces(t *testing.T) {
	n := 0
	accept := func(nw uint8, a string) (io.ReadWriteCloser, error) {
		if a == "refuse:1" {
			return nil, errors.New("refused")
		}
		return echo(t)(nw, a)
	}
	mh, mg := socketMuxes(t, earlyConfig(1<<16, nil), earlyConfig(1<<16, accept))
	for i := range 300 {
		address := "a:1"
		if i%3 == 0 {
			address = "refuse:1"
		}
		s, err := mh.Open(protocol.NetTCP, address)
		if err != nil {
			t.Fatalf("stream %d: %v (guest: %v)", i, err, mg.Err())
		}
		s.Write([]byte("ping"))
		switch i % 4 {
		case 0:
			s.Close()
		default:
			s.CloseWrite()
			got, err := io.ReadAll(s)
			if address == "a:1" && (string(got) != "ping" || err != nil) {
				t.Fatalf("stream %d: %q, %v (guest: %v)", i, got, err, mg.Err())
			}
			s.Close()
		}
		n++
	}
	waitFor(t, func() bool { return draining(mg) == 0 && mg.Streams() == 0 && mh.Streams() == 0 }, "every stream to be freed")
	if mg.Err() != nil || mh.Err() != nil {
		t.Fatalf("after %d streams the connection ended: %v, %v", n, mg.Err(), mh.Err())
	}
}

// Lies only early data makes possible: a peer that leaves refused streams
// unclosed, one that answers with a window below what it was sent.
func TestEarlyDataLies(t *testing.T) {
	t.Run("refused streams never closed", func(t *testing.T) {
		a, b := net.Pipe()
		defer b.Close()
		cfg := earlyConfig(1<<16, func(uint8, string) (io.ReadWriteCloser, error) { return nil, errors.New("no") })
		cfg.MaxStreams = 2
		m := New(a, protocol.NewReader(a), protocol.NewWriter(a), cfg)
		ran := make(chan error, 1)
		go func() { ran <- m.Run() }()
		go io.Copy(io.Discard, b)
		for id := uint32(1); id < 20; id += 2 {
			f := protocol.AppendStream(nil, protocol.TypeStreamOpen, &protocol.StreamFrame{ID: id, Window: 64, Network: protocol.NetTCP, Address: "a:1"})
			if _, err := b.Write(f); err != nil {
				break
			}
		}
		wantRunError(t, ran, "refused streams unclosed")
	})
	t.Run("a window below the early data", func(t *testing.T) {
		a, b := net.Pipe()
		defer b.Close()
		m := New(a, protocol.NewReader(a), protocol.NewWriter(a), earlyConfig(1<<16, nil))
		ran := make(chan error, 1)
		go func() { ran <- m.Run() }()
		go func() {
			r := protocol.NewReader(b)
			for {
				typ, p, err := r.Next()
				if err != nil {
					return
				}
				if typ == protocol.TypeStreamData { // answered once the early data is in
					f, _ := protocol.DecodeStream(typ, p)
					go b.Write(protocol.AppendStream(nil, protocol.TypeStreamOpened, &protocol.StreamFrame{ID: f.ID, Window: 16}))
				}
			}
		}()
		s, err := m.Open(protocol.NetTCP, "a:1")
		if err != nil {
			t.Fatal(err)
		}
		s.Write(make([]byte, 100))
		wantRunError(t, ran, "window below the 100 bytes sent")
	})
	t.Run("data before the answer without early data", func(t *testing.T) {
		a, b := net.Pipe()
		defer b.Close()
		gate := make(chan struct{})
		defer close(gate)
		m := New(a, protocol.NewReader(a), protocol.NewWriter(a), config(1<<16, gated(t, gate, false)))
		ran := make(chan error, 1)
		go func() { ran <- m.Run() }()
		go io.Copy(io.Discard, b)
		b.Write(protocol.AppendStream(nil, protocol.TypeStreamOpen, &protocol.StreamFrame{ID: 1, Window: 64, Network: protocol.NetTCP, Address: "a:1"}))
		b.Write(protocol.AppendStream(nil, protocol.TypeStreamData, &protocol.StreamFrame{ID: 1, Data: []byte("x")}))
		wantRunError(t, ran, "not open for it")
	})
}

func wantRunError(t *testing.T, ran <-chan error, want string) {
	t.Helper()
	select {
	case err := <-ran:
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("Run: %v, want an error saying %q", err, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the Mux took the lie for 10s (want %q)", want)
	}
}
