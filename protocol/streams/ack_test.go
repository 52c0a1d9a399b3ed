package streams

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/prototest"
)

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
	_, peer, _ := runningMux(t, config(1024, accept))
	peer.send(protocol.TypeStreamOpen, protocol.StreamFrame{ID: 1, Window: 1024, Network: protocol.NetTCP, Address: "a:1"})
	if typ := peer.next(10 * time.Second); typ != protocol.TypeStreamOpened {
		t.Fatalf("answered %v", typ)
	}
	far := <-service
	peer.send(protocol.TypeStreamData, protocol.StreamFrame{ID: 1, Data: []byte("ping")})
	peer.send(protocol.TypeStreamEOF, protocol.StreamFrame{ID: 1})
	if got := readAll(t, far); string(got) != "ping" {
		t.Fatalf("the service read %q", got)
	}
	far.Write([]byte("pong"))
	far.Close()

	want := []protocol.Type{protocol.TypeStreamData, protocol.TypeStreamEOF, protocol.TypeStreamClose}
	for _, wt := range want {
		if typ := peer.next(10 * time.Second); typ != wt {
			t.Fatalf("sent %v, want %v: a small exchange sent an acknowledgement", typ, wt)
		}
	}
}
