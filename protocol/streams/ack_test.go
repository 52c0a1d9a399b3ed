package streams

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/prototest"
)

// frameReader reads the frames a Mux writes on c, with a deadline each.
type frameReader struct {
	c net.Conn
	r *protocol.Reader
}

func (f *frameReader) next(t *testing.T) (protocol.Type, protocol.StreamFrame) {
	t.Helper()
	f.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	typ, p, err := f.r.Next()
	if err != nil {
		t.Fatalf("reading the next frame: %v", err)
	}
	fr, err := protocol.DecodeStream(typ, p)
	if err != nil {
		t.Fatal(err)
	}
	return typ, fr
}

// plain is a local end Join cannot write to directly, so every byte goes
// through the stream's Read.
type plain struct{ *net.UnixConn }

// A request and its reply, each far under half the window, cost no
// acknowledgement: the frames of the exchange are the open's answer, the
// reply, its end and the close.
func TestSmallReadsSendNoAcknowledgement(t *testing.T) {
	service := make(chan *net.UnixConn, 1)
	accept := func(uint8, string) (io.ReadWriteCloser, error) {
		local, far := prototest.SocketPair(t)
		service <- far
		return plain{local}, nil
	}
	a, b := prototest.SocketPair(t)
	m := New(a, protocol.NewReader(a), protocol.NewWriter(a), config(1024, accept))
	go m.Run()
	defer m.Close()
	peer := &frameReader{c: b, r: protocol.NewReader(b)}
	w := protocol.NewWriter(b)
	w.WriteFramed(protocol.AppendStream(nil, protocol.TypeStreamOpen, &protocol.StreamFrame{ID: 1, Window: 1024, Network: protocol.NetTCP, Address: "a:1"}))
	if typ, _ := peer.next(t); typ != protocol.TypeStreamOpened {
		t.Fatalf("answered %v", typ)
	}
	far := <-service
	w.WriteFramed(protocol.AppendStream(nil, protocol.TypeStreamData, &protocol.StreamFrame{ID: 1, Data: []byte("ping")}))
	w.WriteFramed(protocol.AppendStream(nil, protocol.TypeStreamEOF, &protocol.StreamFrame{ID: 1}))
	if got := readAll(t, far); string(got) != "ping" {
		t.Fatalf("the service read %q", got)
	}
	far.Write([]byte("pong"))
	far.Close()

	want := []protocol.Type{protocol.TypeStreamData, protocol.TypeStreamEOF, protocol.TypeStreamClose}
	for _, wt := range want {
		if typ, f := peer.next(t); typ != wt {
			t.Fatalf("sent %v %+v, want %v: a small exchange sent an acknowledgement", typ, f, wt)
		}
	}
}
