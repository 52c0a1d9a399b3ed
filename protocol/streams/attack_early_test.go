package streams

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/prototest"
)

// Attacks on early data from a peer that follows the spec to the letter,
// or lies: each test names the rule it checks.

// An opener refused with early data sends the StreamClose that frees the
// id on the refusing side. Until that close is on the wire, the refused
// stream is still one of the opener's: an open sent before it would have
// the refusing side hold more refused streams than MaxStreams, which it
// takes for a peer that never closes them and ends the connection.
func TestEarlyRefusedCloseGoesBeforeTheNextOpen(t *testing.T) {
	a, b := prototest.SocketPair(t)
	cfg := earlyConfig(1<<16, nil)
	cfg.MaxStreams, cfg.Odd = 1, true
	m := New(a, protocol.NewReader(a), protocol.NewWriter(a), cfg)
	go m.Run()
	t.Cleanup(func() { m.Close() })

	const opens = 3000
	bad := make(chan string, 1)
	go func() { // the refusing side: every open refused at once
		r, w := protocol.NewReader(b), protocol.NewWriter(b)
		unclosed := map[uint32]bool{}
		for {
			typ, p, err := r.Next()
			if err != nil {
				return
			}
			f, err := protocol.DecodeStream(typ, p)
			if err != nil {
				bad <- err.Error()
				return
			}
			switch typ {
			case protocol.TypeStreamOpen:
				if len(unclosed) > 0 {
					bad <- fmt.Sprintf("stream %d opened while refused stream(s) %v were not closed: %d refused streams unclosed, MaxStreams is 1", f.ID, unclosed, len(unclosed)+1)
					return
				}
				unclosed[f.ID] = true
				w.WriteFramed(protocol.AppendStream(nil, protocol.TypeStreamRefused, &protocol.StreamFrame{ID: f.ID, Reason: "no"}))
			case protocol.TypeStreamClose:
				delete(unclosed, f.ID)
			}
		}
	}()
	for i := 0; i < opens; {
		select {
		case msg := <-bad:
			t.Fatalf("after %d opens: %s", i, msg)
		default:
		}
		s, err := m.Open(protocol.NetTCP, "a:1")
		if err != nil {
			if !strings.Contains(err.Error(), "at the limit") {
				t.Fatal(err)
			}
			continue // the refused stream's place is not free yet: try again at once
		}
		s.Write([]byte("x"))
		i++
	}
}

// The same with two Muxes: opens that are all refused, each made as soon
// as the last refusal freed its place, must not end the connection.
func TestEarlyRefusalsInARowKeepTheConnection(t *testing.T) {
	refuse := func(uint8, string) (io.ReadWriteCloser, error) { return nil, errors.New("connection refused") }
	host, guest := earlyConfig(1<<16, nil), earlyConfig(1<<16, refuse)
	host.MaxStreams, guest.MaxStreams = 1, 1
	mh, mg := socketMuxes(t, host, guest)
	for i := 0; i < 3000; {
		if err := mg.Err(); err != nil {
			t.Fatalf("after %d refused opens the guest ended the connection: %v", i, err)
		}
		s, err := mh.Open(protocol.NetTCP, "a:1")
		if err != nil {
			if !strings.Contains(err.Error(), "at the limit") {
				t.Fatalf("after %d refused opens: %v (guest: %v)", i, err, mg.Err())
			}
			continue
		}
		s.Write([]byte("x"))
		i++
	}
}

// With corkd's default limit of 64 streams a connection and a client
// making connections at once to a guest port nobody listens on.
func TestEarlyRefusalsAtOnceKeepTheConnection(t *testing.T) {
	refuse := func(uint8, string) (io.ReadWriteCloser, error) { return nil, errors.New("connection refused") }
	host, guest := earlyConfig(1<<16, nil), earlyConfig(1<<16, refuse)
	host.MaxStreams, guest.MaxStreams = 64, 64
	mh, mg := socketMuxes(t, host, guest)
	deadline := time.Now().Add(3 * time.Second)
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && mg.Err() == nil {
				if s, err := mh.Open(protocol.NetTCP, "a:1"); err == nil {
					s.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
				}
			}
		}()
	}
	wg.Wait()
	if err := mg.Err(); err != nil {
		t.Fatalf("the guest ended the connection: %v", err)
	}
}

// rawPeer is the far end of a Mux, written and read frame by frame.
type rawPeer struct {
	w     *protocol.Writer
	types chan protocol.Type // of the frames the Mux sends; closed at the connection's end
}

func newRawPeer(c io.ReadWriter) *rawPeer {
	p := &rawPeer{w: protocol.NewWriter(c), types: make(chan protocol.Type, 64)}
	go func() {
		r := protocol.NewReader(c)
		for {
			typ, _, err := r.Next()
			if err != nil {
				close(p.types)
				return
			}
			p.types <- typ
		}
	}()
	return p
}

func (p *rawPeer) send(t protocol.Type, f protocol.StreamFrame) {
	p.w.WriteFramed(protocol.AppendStream(nil, t, &f))
}

// next is the type of the next frame the Mux sends, or 0 when none came
// within d or the connection ended.
func (p *rawPeer) next(d time.Duration) protocol.Type {
	select {
	case t := <-p.types:
		return t
	case <-time.After(d):
		return 0
	}
}

// runningMux is a Mux on a socket pair whose far end is a rawPeer.
func runningMux(t *testing.T, cfg Config) (*Mux, *rawPeer, <-chan error) {
	a, b := prototest.SocketPair(t)
	m := New(a, protocol.NewReader(a), protocol.NewWriter(a), cfg)
	ran := make(chan error, 1)
	go func() { ran <- m.Run() }()
	t.Cleanup(func() { m.Close() })
	return m, newRawPeer(b), ran
}

// The spec lets an opener send 32 KiB before the answer; more is a lie
// that the acceptor should not buffer while it connects.
func TestEarlyDataBeyondTheEarlyWindow(t *testing.T) {
	gate := make(chan struct{})
	defer close(gate)
	_, p, ran := runningMux(t, earlyConfig(1<<20, gated(t, gate, false)))
	p.send(protocol.TypeStreamOpen, protocol.StreamFrame{ID: 1, Window: 1 << 16, Network: protocol.NetTCP, Address: "a:1"})
	for range 4 { // 64 KiB, twice the early window
		p.send(protocol.TypeStreamData, protocol.StreamFrame{ID: 1, Data: make([]byte, 16<<10)})
	}
	select {
	case err := <-ran:
		if err == nil || !strings.Contains(err.Error(), "window") {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatalf("the acceptor buffered %d bytes of early data, beyond protocol.EarlyWindow (%d)", 64<<10, protocol.EarlyWindow)
	}
}

// Frames in every order around the acceptor's answer: what the spec allows
// is answered and leaves nothing held; what it does not ends the
// connection with an error that names it.
func TestEarlyFrameOrders(t *testing.T) {
	const (
		open, data, eof, cls, ack = protocol.TypeStreamOpen, protocol.TypeStreamData, protocol.TypeStreamEOF, protocol.TypeStreamClose, protocol.TypeStreamAck
		opened, refused           = protocol.TypeStreamOpened, protocol.TypeStreamRefused
	)
	tests := []struct {
		name   string
		refuse bool
		before []protocol.Type // sent after the open, while the acceptor connects
		answer []protocol.Type // what the acceptor sends once it has
		after  []protocol.Type // sent once the answer came
		error  string          // the connection's end, or "" for none
	}{
		{"data, EOF, close; accepted", false, []protocol.Type{data, eof, cls}, []protocol.Type{opened, cls}, nil, ""},
		{"data, EOF, close; refused", true, []protocol.Type{data, eof, cls}, []protocol.Type{refused}, nil, ""},
		{"close alone; accepted", false, []protocol.Type{cls}, []protocol.Type{opened, cls}, nil, ""},
		{"data; refused; data, EOF, close after", true, []protocol.Type{data}, []protocol.Type{refused}, []protocol.Type{data, eof, cls}, ""},
		{"refused; close; reopened", true, nil, []protocol.Type{refused}, []protocol.Type{cls, open, cls}, ""},
		{"close then data", false, []protocol.Type{cls, data}, nil, nil, "not open"},
		{"EOF then data", false, []protocol.Type{eof, data}, nil, nil, "not open for it"},
		{"close twice", false, []protocol.Type{cls, cls}, nil, nil, "stream-close"},
		{"ack before the answer", false, []protocol.Type{ack}, nil, nil, "acknowledged"},
		{"refused; reopened before its close", true, nil, []protocol.Type{refused}, []protocol.Type{open}, "already open"},
		{"refused; an ack for it", true, nil, []protocol.Type{refused}, []protocol.Type{ack}, "was refused"},
		{"refused; closed; data", true, nil, []protocol.Type{refused}, []protocol.Type{cls, data}, "not open"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gate := make(chan struct{})
			m, p, ran := runningMux(t, earlyConfig(1<<16, gated(t, gate, tt.refuse)))
			send := func(typ protocol.Type) {
				f := protocol.StreamFrame{ID: 1, N: 1, Data: []byte("x")}
				if typ == open {
					f = protocol.StreamFrame{ID: 1, Window: 1 << 16, Network: protocol.NetTCP, Address: "a:1"}
				}
				p.send(typ, f)
			}
			send(open)
			for _, typ := range tt.before {
				send(typ)
			}
			waitFor(t, func() bool { return m.Streams() == 1 || m.Err() != nil }, "the open to arrive")
			close(gate)
			for _, want := range tt.answer {
				got := p.next(5 * time.Second)
				for got == ack || got == data { // the stream was joined before the close arrived
					got = p.next(5 * time.Second)
				}
				if got != want {
					t.Fatalf("answered %v, want %v (connection: %v)", got, want, m.Err())
				}
			}
			for _, typ := range tt.after {
				send(typ)
			}
			if tt.error != "" {
				wantRunError(t, ran, tt.error)
				return
			}
			waitFor(t, func() bool { return m.Streams() == 0 && draining(m) == 0 || m.Err() != nil }, "the stream to be freed")
			if err := m.Err(); err != nil {
				t.Fatalf("the connection ended: %v", err)
			}
		})
	}
}

// Opens beyond MaxStreams, each with early data and closed right behind,
// while the streams within the limit wait for slow dials: each is refused,
// its frames drained and its id freed by the close, however many come.
func TestEarlyOpensBeyondTheLimitWithCloses(t *testing.T) {
	gate := make(chan struct{})
	cfg := earlyConfig(1<<16, gated(t, gate, false))
	cfg.MaxStreams = 4
	m, p, _ := runningMux(t, cfg)
	go func() {
		for range p.types {
		}
	}()
	for id := uint32(1); id < 2000; id += 2 {
		p.send(protocol.TypeStreamOpen, protocol.StreamFrame{ID: id, Window: 1 << 16, Network: protocol.NetTCP, Address: "a:1"})
		p.send(protocol.TypeStreamData, protocol.StreamFrame{ID: id, Data: make([]byte, 1<<10)})
		if id > 2*4 {
			p.send(protocol.TypeStreamClose, protocol.StreamFrame{ID: id})
		}
	}
	waitFor(t, func() bool { return draining(m) == 0 && m.Streams() == 4 || m.Err() != nil }, "the refused streams to be freed")
	if err := m.Err(); err != nil {
		t.Fatalf("the connection ended: %v", err)
	}
	close(gate)
}
