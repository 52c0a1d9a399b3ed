package streams

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/prototest"
)

// pair returns two Muxes joined in memory, the host's (odd ids) and the
// guest's, running until the test ends.
func pair(t *testing.T, host, guest Config) (*Mux, *Mux) {
	t.Helper()
	a, b := net.Pipe()
	return joined(t, a, b, host, guest)
}

// joined returns the host's and the guest's Mux on the two ends of a
// connection, running until the test ends.
func joined(t *testing.T, a, b net.Conn, host, guest Config) (*Mux, *Mux) {
	t.Helper()
	host.Odd, guest.Odd = true, false
	mh := New(a, protocol.NewReader(a), protocol.NewWriter(a), host)
	mg := New(b, protocol.NewReader(b), protocol.NewWriter(b), guest)
	go mh.Run()
	go mg.Run()
	t.Cleanup(func() { mh.Close(); mg.Close() })
	return mh, mg
}

// echo accepts each stream with a local end whose far side echoes what it
// reads, then half closes.
func echo(t *testing.T) func(uint8, string) (io.ReadWriteCloser, error) {
	return func(uint8, string) (io.ReadWriteCloser, error) {
		local, far := prototest.SocketPair(t)
		go func() {
			io.Copy(far, far)
			far.CloseWrite()
		}()
		return local, nil
	}
}

func config(window uint32, accept func(uint8, string) (io.ReadWriteCloser, error)) Config {
	return Config{Window: window, MaxStreams: 16, Accept: accept}
}

// readAll reads s to EOF within a deadline.
func readAll(t *testing.T, r io.Reader) []byte {
	t.Helper()
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(r)
		got <- b
	}()
	select {
	case b := <-got:
		return b
	case <-time.After(10 * time.Second):
		t.Fatal("no EOF within 10s")
		return nil
	}
}

func TestStreamHalfCloseCarriesTheReply(t *testing.T) {
	mh, _ := pair(t, config(1024, nil), config(1024, echo(t)))
	s, err := mh.Open(protocol.NetTCP, "127.0.0.1:80")
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 windows' worth
	go func() {
		s.Write(want)
		s.CloseWrite()
	}()
	if got := readAll(t, s); !bytes.Equal(got, want) {
		t.Fatalf("echo has %d bytes, want %d", len(got), len(want))
	}
	s.Close()
	waitFor(t, func() bool { return mh.Streams() == 0 }, "the stream's place to be freed")
}

func TestStalledStreamHoldsBackOnlyItself(t *testing.T) {
	stalledFar := make(chan *net.UnixConn, 1)
	first := true
	accept := func(n uint8, a string) (io.ReadWriteCloser, error) {
		if first {
			first = false
			local, far := prototest.SocketPair(t) // far is never read
			stalledFar <- far
			return local, nil
		}
		return echo(t)(n, a)
	}
	// A window of several frames: the stalled stream's buffer holds data
	// while more arrives for it.
	mh, _ := pair(t, config(4*protocol.MaxStreamData, nil), config(4*protocol.MaxStreamData, accept))
	stalled, err := mh.Open(protocol.NetTCP, "stalled:1")
	if err != nil {
		t.Fatal(err)
	}
	go stalled.Write(make([]byte, 8<<20)) // far more than the window and the socket buffers
	<-stalledFar
	waitFor(t, func() bool {
		stalled.mu.Lock()
		defer stalled.mu.Unlock()
		return stalled.credit == 0
	}, "the stalled stream to use up its credit")
	opened := make(chan *Stream, 1)
	go func() {
		s, err := mh.Open(protocol.NetTCP, "moving:1")
		if err != nil {
			t.Error(err)
		}
		opened <- s
	}()
	var s *Stream
	select {
	case s = <-opened:
	case <-time.After(10 * time.Second):
		t.Fatal("a second stream could not open beside the stalled one within 10s")
	}
	if s == nil {
		return
	}
	go func() {
		s.Write([]byte("still moving"))
		s.CloseWrite()
	}()
	if got := readAll(t, s); string(got) != "still moving" {
		t.Fatalf("got %q", got)
	}
}

func TestStreamRefusedWithTheReason(t *testing.T) {
	accept := func(n uint8, a string) (io.ReadWriteCloser, error) {
		if a == "/run/secret.sock" {
			return nil, errors.New("dial unix /run/secret.sock: permission denied")
		}
		return echo(t)(n, a)
	}
	mh, _ := pair(t, config(1024, nil), config(1024, accept))
	_, err := mh.Open(protocol.NetUnix, "/run/secret.sock")
	var re *RefusedError
	if !errors.As(err, &re) || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("open: %v, want a refusal saying permission denied", err)
	}
	s, err := mh.Open(protocol.NetUnix, "/run/ok.sock")
	if err != nil {
		t.Fatalf("a refusal ended the connection: %v", err)
	}
	s.Close()
}

func TestStreamLimitPerConnection(t *testing.T) {
	g := config(1024, echo(t))
	g.MaxStreams = 2
	h := config(1024, nil)
	h.MaxStreams = 10
	mh, _ := pair(t, h, g)
	for range 2 {
		if _, err := mh.Open(protocol.NetTCP, "a:1"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := mh.Open(protocol.NetTCP, "a:1"); err == nil || !strings.Contains(err.Error(), "limit of 2 streams") {
		t.Fatalf("third open: %v, want the limit named", err)
	}
}

func TestPeerClosingTheConnectionEndsEveryStream(t *testing.T) {
	mh, mg := pair(t, config(1024, nil), config(1024, echo(t)))
	s, err := mh.Open(protocol.NetTCP, "a:1")
	if err != nil {
		t.Fatal(err)
	}
	mg.Close()
	if b := readAll(t, s); len(b) != 0 {
		t.Fatalf("read %q", b)
	}
	if _, err := s.Write([]byte("x")); err == nil {
		t.Fatal("write on a lost connection succeeded")
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10s for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// Acknowledgements race each stream's close: the reader acknowledges what
// it read while the peer's close is being answered. Nothing may follow a
// stream's close on the wire, or the peer ends the connection over a
// frame for a stream it has forgotten.
func TestNothingFollowsAStreamsClose(t *testing.T) {
	mh, _ := pair(t, config(64, nil), config(64, echo(t)))
	for i := range 300 {
		s, err := mh.Open(protocol.NetTCP, "a:1")
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		go func() {
			s.Write([]byte("a reply longer than half the window"))
			s.CloseWrite()
		}()
		if got := readAll(t, s); len(got) != 35 {
			t.Fatalf("stream %d: %q", i, got)
		}
		s.Close()
	}
}

// A stream this side closed keeps nothing of what the peer sent while the
// peer's close is awaited: a peer that never answers does not pin a
// window's worth of memory per stream.
func TestClosedStreamDropsItsBuffer(t *testing.T) {
	host, _ := pair(t, config(1<<16, nil), config(1<<16, echo(t)))
	s, err := host.Open(protocol.NetUnix, "echo")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write(bytes.Repeat([]byte{'x'}, 1<<15)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.buf.Len() == 1<<15
	}, "the echo to be buffered")
	s.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.buf.Cap(); c != 0 {
		t.Fatalf("a closed stream keeps a buffer of %d bytes", c)
	}
}

// What a caller holds for a stream is released once both sides have
// closed it, not at this side's close.
func TestWhenGoneAfterBothCloses(t *testing.T) {
	host, _ := pair(t, config(1<<16, nil), config(1<<16, echo(t)))
	s, err := host.Open(protocol.NetUnix, "echo")
	if err != nil {
		t.Fatal(err)
	}
	released := make(chan struct{})
	s.WhenGone(func() { close(released) })
	s.Close()
	select {
	case <-released:
	case <-time.After(10 * time.Second):
		t.Fatal("not released after both closes")
	}
	ran := false
	s.WhenGone(func() { ran = true })
	if !ran {
		t.Fatal("WhenGone on a gone stream did not run at once")
	}
}

// A refusal whose reason is longer than a frame allows, or not UTF-8
// (an address of the peer's, quoted back), is cut on a rune boundary and
// made valid: the peer gets a reason, not a broken connection.
func TestRefusalReasonIsValidUTF8(t *testing.T) {
	refuse := func(_ uint8, address string) (io.ReadWriteCloser, error) {
		return nil, errors.New("dial unix " + address + ": connect: no such file or directory")
	}
	host, _ := pair(t, config(1024, nil), config(1024, refuse))
	for _, address := range []string{"/" + strings.Repeat("é", 600), "/tmp/\xff\xfe.sock"} {
		_, err := host.Open(protocol.NetUnix, address)
		var refused *RefusedError
		if !errors.As(err, &refused) {
			t.Fatalf("%.20q: %v, want a refusal", address, err)
		}
		if !utf8.ValidString(refused.Reason) || len(refused.Reason) > protocol.MaxStreamReason {
			t.Fatalf("%.20q: a reason of %d bytes, valid UTF-8 %v", address, len(refused.Reason), utf8.ValidString(refused.Reason))
		}
	}
}

func TestClip(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"abc", 5, "abc"},
		{"abc", 2, "ab"},
		{"aé", 2, "a"},
		{"aé", 3, "aé"},
		{"a\xffb", 10, "a\uFFFDb"},
		{"ééé", 0, ""},
	} {
		if got := Clip(c.in, c.n); got != c.want {
			t.Errorf("Clip(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
}

// A frame larger than any a stream connection carries ends the
// connection, however valid its content: the reader's buffer never grows
// past a StreamData.
func TestPaddedFrameEndsTheConnection(t *testing.T) {
	a, b := net.Pipe()
	listens := make(chan protocol.Type, 1)
	m := New(a, protocol.NewReader(a), protocol.NewWriter(a), Config{Window: 1024, MaxStreams: 1,
		Control: func(t protocol.Type, p []byte) error { listens <- t; return nil }})
	done := make(chan error, 1)
	go func() { done <- m.Run() }()
	t.Cleanup(func() { m.Close(); b.Close() })
	padded := append([]byte(`{"id":1,"port":0}`), bytes.Repeat([]byte{' '}, 64<<10)...)
	go protocol.NewWriter(b).WriteFrame(protocol.TypeListen, padded)
	select {
	case err := <-done:
		if !errors.Is(err, protocol.ErrTooLarge) {
			t.Fatalf("the connection ended with %v, want ErrTooLarge", err)
		}
	case typ := <-listens:
		t.Fatalf("a %d-byte %s was served", len(padded), typ)
	case <-time.After(10 * time.Second):
		t.Fatal("no answer within 10s")
	}
}

// A Read hands over what came before it acknowledges it: the answer to a
// request is not held up behind the request's acknowledgement. On
// net.Pipe a write waits for its reader, and the peer here reads nothing
// more until Read has returned.
func TestReadReturnsBeforeItsAcknowledgement(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	m := New(a, protocol.NewReader(a), protocol.NewWriter(a), config(1024, nil))
	go m.Run()
	defer m.Close()
	peer := protocol.NewReader(b)
	opened := make(chan *Stream, 1)
	go func() {
		s, err := m.Open(protocol.NetTCP, "a:1")
		if err != nil {
			t.Error(err)
		}
		opened <- s
	}()
	typ, p, err := peer.Next()
	if err != nil || typ != protocol.TypeStreamOpen {
		t.Fatalf("got %v, %v, want the open", typ, err)
	}
	f, _ := protocol.DecodeStream(typ, p)
	b.Write(protocol.AppendStream(nil, protocol.TypeStreamOpened, &protocol.StreamFrame{ID: f.ID, Window: 64}))
	s := <-opened
	reply := strings.Repeat("r", 512) // half the window: acknowledged
	b.Write(protocol.AppendStream(nil, protocol.TypeStreamData, &protocol.StreamFrame{ID: f.ID, Data: []byte(reply)}))
	read := make(chan string, 1)
	go func() {
		buf := make([]byte, 1024)
		n, _ := s.Read(buf)
		read <- string(buf[:n])
	}()
	select {
	case got := <-read:
		if got != reply {
			t.Fatalf("read %q", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Read waited for its acknowledgement to be taken")
	}
	go s.Read(make([]byte, 16)) // the next Read acknowledges the reply
	typ, p, err = peer.Next()
	if f, _ := protocol.DecodeStream(typ, p); err != nil || typ != protocol.TypeStreamAck || f.N != 512 {
		t.Fatalf("got %v %+v, %v, want an acknowledgement of 512 bytes", typ, f, err)
	}
}

// Bytes the connection's reader writes straight to a joined socket, and
// those it leaves to Join when the socket is full, arrive whole and in
// order, with the window's acknowledgements flowing, however the reads
// on the far side fall.
func TestDirectDeliveryKeepsOrder(t *testing.T) {
	far := make(chan *net.UnixConn, 1)
	accept := func(uint8, string) (io.ReadWriteCloser, error) {
		local, f := prototest.SocketPair(t)
		local.SetWriteBuffer(4096) // full often: writes of part of a frame
		far <- f
		return local, nil
	}
	mh, _ := socketMuxes(t, earlyConfig(1<<22, nil), earlyConfig(1<<22, accept))
	s, err := mh.Open(protocol.NetTCP, "a:1")
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 8<<20)
	for i := range want {
		want[i] = byte(i * 7 / 5)
	}
	go func() {
		for p := want; len(p) > 0; {
			n := min(len(p), 1+len(p)%40000)
			if _, err := s.Write(p[:n]); err != nil {
				t.Error(err)
				return
			}
			p = p[n:]
		}
		s.CloseWrite()
	}()
	f := <-far
	f.SetDeadline(time.Now().Add(60 * time.Second))
	var got []byte
	buf := make([]byte, 1)
	for {
		n, err := f.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			break
		}
		buf = make([]byte, 1+len(got)%70000) // reads of every size, some far smaller than a frame
	}
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("got %d bytes, want %d; they part at byte %d", len(got), len(want), i)
	}
}
