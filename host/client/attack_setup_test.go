package client

import (
	"net"
	"testing"
	"time"

	"github.com/corkvm/cork/protocol"
)

// DEFECT: Serve now opens each stream on its accept goroutine (OpenFor).
// Without early data (a corkd that does not agree to it, or whose window
// is under 32 KiB) OpenFor is Open, which waits for the guest's answer:
// one connection the guest is still dialing (up to its dial timeout), or
// one it never answers, stops Serve accepting every other connection.
func TestAttackServeOneSlowOpenHoldsBackTheNext(t *testing.T) {
	opens := make(chan uint32, 8)
	fw := fakeForwardingAgent(t, func(r *protocol.Reader, w *protocol.Writer) {
		for {
			typ, p, err := r.Next()
			if err != nil {
				return
			}
			if typ == protocol.TypeStreamOpen {
				f, _ := protocol.DecodeStream(typ, p)
				opens <- f.ID // never answered: a dial that takes its time
			}
		}
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go fw.Serve(l, protocol.NetTCP, "127.0.0.1:80", func(error) {})
	for i := range 2 {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		select {
		case <-opens:
		case <-time.After(5 * time.Second):
			t.Fatalf("connection %d: no StreamOpen within 5s: Serve waits for the answer to the one before", i+1)
		}
	}
}
