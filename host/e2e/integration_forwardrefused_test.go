//go:build linux

package e2e

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corkvm/cork/protocol/prototest"
)

// TestForwardSurvivesABurstOfRefusedConnections: clients that connect at
// once to a guest port nobody listens on (a dev server restarting) get
// their connections refused, and the forward goes on: once the port
// listens again, a connection through the same cork forward gets through.
// cork sends the StreamClose of a refused stream after freeing its place
// (Stream.refusedByPeer), so an open can overtake it, and corkd then holds
// more refused streams than MaxStreams and ends the connection.
func TestForwardSurvivesABurstOfRefusedConnections(t *testing.T) {
	a := startAgent(t)
	l, port := listenTCP(t)
	l.Close() // nobody listens there for now
	// cork forward relays on one P unless GOMAXPROCS says otherwise; on
	// one P the race below is rare, on two (the bench's other row) it is
	// not.
	t.Setenv("GOMAXPROCS", "2")
	f := startForward(t, "--connect", a.url, "0:"+port)
	burst(f.from[0], 128, 3*time.Second)
	l, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		t.Fatal(err)
	}
	prototest.Serve(t, l, counter)
	if got := halfClose(t, dialFrom(t, f.from[0]), []byte("hi")); got != "read 2 bytes" {
		stderr := f.stderr.String()
		t.Fatalf("after the burst: %q; cork forward's stderr ends:\n%s", got, stderr[max(0, len(stderr)-300):])
	}
}

// The other way, with nothing set: corkd opens the streams of cork forward
// -R, on corkd's many Ps, and cork refuses them while nothing listens on
// the host's port.
func TestForwardRemoteSurvivesABurstOfRefusedConnections(t *testing.T) {
	a := startAgent(t, "--forwarding=all")
	l, port := listenTCP(t)
	l.Close() // nobody listens on the host's port for now
	f := startForward(t, "--connect", a.url, "-R", "0:127.0.0.1:"+port)
	guest := strings.TrimPrefix(f.from[0], "guest ")
	burst(guest, 128, 3*time.Second)
	l, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		t.Fatal(err)
	}
	prototest.Serve(t, l, counter)
	if got := halfClose(t, dialFrom(t, guest), []byte("hi")); got != "read 2 bytes" {
		stderr := f.stderr.String()
		t.Fatalf("after the burst: %q; cork forward's stderr ends:\n%s", got, stderr[max(0, len(stderr)-300):])
	}
}

// burst has n clients connect to addr for d, each sending a request and
// waiting a little for an answer.
func burst(addr string, n int, d time.Duration) {
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				c, err := net.DialTimeout("tcp", addr, time.Second)
				if err != nil {
					continue
				}
				c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
				c.SetReadDeadline(time.Now().Add(time.Second))
				c.Read(make([]byte, 1))
				c.Close()
			}
		}()
	}
	wg.Wait()
}
