package streams

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/prototest"
)

// A connection's set-up costs each side as few frames, writes and wakes
// as the protocol allows: the request goes with the open and reaches the
// service before the answer.

// What a connection sent before its stream opened goes with the open, in
// the same write, without Join: the guest has the request when it has
// connected.
func TestOpenForSendsWaitingBytesWithTheOpen(t *testing.T) {
	a, b := prototest.SocketPair(t)
	m := New(a, protocol.NewReader(a), protocol.NewWriter(a), earlyConfig(1<<16, nil))
	go m.Run()
	defer m.Close()
	local, client := prototest.SocketPair(t)
	client.Write([]byte("GET / HTTP/1.0\r\n\r\n"))

	if _, err := m.OpenFor(protocol.NetTCP, "a:80", local); err != nil {
		t.Fatal(err)
	}
	peer := oneRead(t, b)
	if typ, _, err := peer.Next(); err != nil || typ != protocol.TypeStreamOpen {
		t.Fatalf("first frame %v, %v; want the open", typ, err)
	}
	typ, p, err := peer.Next()
	if err != nil || typ != protocol.TypeStreamData {
		t.Fatalf("the open came alone (then %v, %v): the request did not go with it", typ, err)
	}
	if f, _ := protocol.DecodeStream(typ, p); string(f.Data) != "GET / HTTP/1.0\r\n\r\n" {
		t.Fatalf("early data %q", f.Data)
	}
}

// A connection that sent nothing, only its end, opens a stream all the
// same (the service may speak first), and Join carries the end.
func TestOpenForLeavesTheEndToJoin(t *testing.T) {
	mh, _ := socketMuxes(t, earlyConfig(1<<16, nil), earlyConfig(1<<16, echo(t)))
	local, client := prototest.SocketPair(t)
	client.CloseWrite()
	s, err := mh.OpenFor(protocol.NetTCP, "a:1", local)
	if err != nil {
		t.Fatal(err)
	}
	go Join(s, local, nil)
	if got := readAll(t, client); len(got) != 0 {
		t.Fatalf("echoed %q for nothing sent", got)
	}
	if err := s.Answer(); err != nil {
		t.Fatal(err)
	}
}

// What OpenFor sends counts against the early window: the writes Join
// makes before the answer send only the rest of it, or the acceptor would
// end the connection over data beyond the window.
func TestOpenForCountsAgainstTheEarlyWindow(t *testing.T) {
	gate := make(chan struct{})
	mh, _ := socketMuxes(t, earlyConfig(1<<16, nil), earlyConfig(1<<16, gated(t, gate, false)))
	request := bytes.Repeat([]byte("r"), protocol.EarlyWindow+protocol.EarlyWindow/2)
	client := openSpendingTheEarlyWindow(t, mh, request)
	close(gate)
	if got := readAll(t, client); !bytes.Equal(got, request) {
		t.Fatalf("echoed %d bytes of %d", len(got), len(request))
	}
}

// openSpendingTheEarlyWindow has a client send request (more than the
// early window) and half close, opens a stream for it with OpenFor once a
// whole early window waits in its socket, joins the two, and returns once
// the early window is spent: the guest, if it is still connecting, has
// all of it buffered, and the rest waits for the answer.
func openSpendingTheEarlyWindow(t *testing.T, mh *Mux, request []byte) (client *net.UnixConn) {
	t.Helper()
	local, client := prototest.SocketPair(t)
	go func() {
		client.Write(request)
		client.CloseWrite()
	}()
	waitFor(t, func() bool { return queuedBytesOf(t, local) >= protocol.EarlyWindow }, "a full early window waiting")
	s, err := mh.OpenFor(protocol.NetTCP, "a:1", local)
	if err != nil {
		t.Fatal(err)
	}
	go Join(s, local, nil)
	waitFor(t, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.credit == 0
	}, "the early window to be spent")
	return client
}

// buffered is how many bytes m's one stream holds for its consumer, or -1
// when m has no stream.
func buffered(m *Mux) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.streams {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.buf.Len()
	}
	return -1
}

// frameBytes is the frames one read of c returned, with a deadline: on
// net.Pipe, what one write wrote.
type frameBytes struct{ *protocol.Reader }

func oneRead(t *testing.T, c net.Conn) frameBytes {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 1024)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return frameBytes{protocol.NewReader(bytes.NewReader(buf[:n]))}
}

// mustNext is the type of the next frame, failing the test without one.
func (f frameBytes) mustNext(t *testing.T) protocol.Type {
	t.Helper()
	typ, _, err := f.Next()
	if err != nil {
		t.Fatal(err)
	}
	return typ
}

func queuedBytesOf(t *testing.T, c *net.UnixConn) int {
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	rc.Control(func(fd uintptr) { n = queuedBytes(int(fd)) })
	return n
}

// The request that came with the open reaches the service as soon as it
// is connected, before the answer to the open is written: here that
// write cannot finish (the opener reads nothing more), and the service
// has the request all the same.
func TestEarlyDataReachesTheServiceBeforeTheAnswer(t *testing.T) {
	service := make(chan *net.UnixConn, 1)
	connected := make(chan struct{})
	accept := func(uint8, string) (io.ReadWriteCloser, error) {
		<-connected // once the request is in, as when a dial takes a while
		local, far := prototest.SocketPair(t)
		service <- far
		return local, nil
	}
	a, b := net.Pipe() // a write waits for its reader: the answer's never ends
	m := New(a, protocol.NewReader(a), protocol.NewWriter(a), earlyConfig(1<<16, accept))
	go m.Run()
	defer m.Close()
	w := protocol.NewWriter(b)
	w.WriteFramed(protocol.AppendStream(nil, protocol.TypeStreamOpen, &protocol.StreamFrame{ID: 1, Window: 1 << 16, Network: protocol.NetTCP, Address: "a:1"}))
	w.WriteFramed(protocol.AppendStream(nil, protocol.TypeStreamData, &protocol.StreamFrame{ID: 1, Data: []byte("ping")}))
	waitFor(t, func() bool { return buffered(m) == 4 }, "the request to be buffered")
	close(connected)

	far := <-service
	far.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, 4)
	if _, err := io.ReadFull(far, got); err != nil || string(got) != "ping" {
		t.Fatalf("the service read %q, %v: the request waited for the answer to the open", got, err)
	}
}

// When the local end's EOF comes after the peer's, the stream's half
// close and its close go in one write, which the peer takes in one wake.
// On net.Pipe a Read returns what one Write wrote, at most.
func TestLastEndSendsEOFAndCloseTogether(t *testing.T) {
	accept := func(uint8, string) (io.ReadWriteCloser, error) {
		local, far := prototest.SocketPair(t)
		go func() {
			io.Copy(io.Discard, far) // to the peer's EOF, then close
			far.Close()
		}()
		return local, nil
	}
	a, b := net.Pipe()
	m := New(a, protocol.NewReader(a), protocol.NewWriter(a), config(1<<16, accept))
	go m.Run()
	defer m.Close()
	w := protocol.NewWriter(b)
	w.WriteFramed(protocol.AppendStream(nil, protocol.TypeStreamOpen, &protocol.StreamFrame{ID: 1, Window: 1 << 16, Network: protocol.NetTCP, Address: "a:1"}))
	if typ := oneRead(t, b).mustNext(t); typ != protocol.TypeStreamOpened {
		t.Fatalf("answered %v", typ)
	}
	go w.WriteFramed(protocol.AppendStream(nil, protocol.TypeStreamEOF, &protocol.StreamFrame{ID: 1}))

	r := oneRead(t, b)
	for _, want := range []protocol.Type{protocol.TypeStreamEOF, protocol.TypeStreamClose} {
		if typ, _, err := r.Next(); err != nil || typ != want {
			t.Fatalf("one write carried %v, %v where %v was due: the end took two writes", typ, err, want)
		}
	}
}
