package streams

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/corkvm/cork/protocol"
)

// A peer that lies gets its connection ended with an error naming the lie;
// the Mux neither panics nor takes what the lie asks for.
func TestLyingPeer(t *testing.T) {
	open := func(id, window uint32) []byte {
		return protocol.AppendStream(nil, protocol.TypeStreamOpen, &protocol.StreamFrame{ID: id, Window: window, Network: protocol.NetTCP, Address: "a:1"})
	}
	data := func(id uint32, n int) []byte {
		return protocol.AppendStream(nil, protocol.TypeStreamData, &protocol.StreamFrame{ID: id, Data: make([]byte, n)})
	}
	ack := func(id, n uint32) []byte {
		return protocol.AppendStream(nil, protocol.TypeStreamAck, &protocol.StreamFrame{ID: id, N: n})
	}
	cat := func(bs ...[]byte) []byte {
		var out []byte
		for _, b := range bs {
			out = append(out, b...)
		}
		return out
	}
	tests := []struct {
		name  string
		send  []byte
		after []byte // sent once the stream is accepted
		error string
	}{
		{"overruns its window", open(1, 64), data(1, 1025), "overran its window"},
		{"sends data after its EOF", open(1, 64), cat(protocol.AppendStream(nil, protocol.TypeStreamEOF, &protocol.StreamFrame{ID: 1}), data(1, 1)), "not open for it"},
		{"data on a stream never opened", data(7, 10), nil, "not open"},
		{"acknowledges bytes never sent", open(1, 64), ack(1, 1), "acknowledged 1 bytes it was not sent"},
		{"opens an id of ours", open(2, 64), nil, "an id of this side's"},
		{"opens an id twice", cat(open(1, 64), open(1, 64)), nil, "already open"},
		{"sends a frame that is no stream's", protocol.AppendStream(nil, protocol.TypeStdout, &protocol.StreamFrame{ID: 1}), nil, "on a connection that carries streams"},
		{"claims a huge address", []byte{byte(protocol.TypeStreamOpen), 0, 0, 0, 11, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0xff, 0xff}, nil, "address of 65535 bytes"},
		{"cuts a frame short", open(1, 64)[:9], nil, "cut off"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer b.Close()
			m := New(a, protocol.NewReader(a), protocol.NewWriter(a), config(1024, echo(t)))
			ran := make(chan error, 1)
			go func() { ran <- m.Run() }()
			accepted := make(chan struct{})
			go func() {
				r := protocol.NewReader(b)
				for {
					t, _, err := r.Next()
					if err != nil {
						return
					}
					if t == protocol.TypeStreamOpened {
						close(accepted)
					}
				}
			}()
			b.Write(tt.send)
			if tt.after != nil {
				<-accepted
				b.Write(tt.after)
			}
			if strings.Contains(tt.name, "cuts") {
				b.Close()
			}
			select {
			case err := <-ran:
				if err == nil || !strings.Contains(err.Error(), tt.error) {
					t.Fatalf("Run: %v, want an error saying %q", err, tt.error)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the Mux took the lie for 10s")
			}
		})
	}
}
