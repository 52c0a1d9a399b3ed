//go:build linux

package main

import (
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/corkvm/cork/protocol"
)

// The connections attack holds n connections to corkd that never become a
// session, each one of these ways, until the attack ends; one that corkd
// closes is opened again, at most redials times over per connection.
var halfDone = []struct {
	name  string
	write func(c net.Conn) error
}{
	{"silent", func(net.Conn) error { return nil }},
	{"half-hello", func(c net.Conn) error { _, err := c.Write(helloFrame()[:9]); return err }},
	{"hello-only", func(c net.Conn) error { _, err := c.Write(helloFrame()); return err }},
	{"half-header", func(c net.Conn) error {
		_, err := c.Write(append(helloFrame(), byte(protocol.TypeExec), 0, 0))
		return err
	}},
	{"exec-cut-short", func(c net.Conn) error {
		b := append(helloFrame(), make([]byte, protocol.HeaderSize+100)...)
		h := b[len(b)-protocol.HeaderSize-100:]
		protocol.PutHeader(h, protocol.TypeExec, protocol.MaxPayload) // announces 1 MiB, sends 100 bytes
		_, err := c.Write(b)
		return err
	}},
	{"pinging", func(c net.Conn) error { _, err := c.Write(helloFrame()); return err }}, // then pings: see pingUntil
}

// redials bounds how often one connection is opened again: enough to
// hold it for the whole attack against a handshake timeout of seconds.
func (a attackArgs) redials() int {
	return 2 + int(time.Until(a.until)/(2*time.Second))
}

func helloFrame() []byte {
	b, _ := protocol.AppendJSON(nil, protocol.TypeHello, &protocol.Hello{MinVersion: protocol.MinVersion, MaxVersion: protocol.MaxVersion, Software: "cork-chaos"})
	return b
}

func attackConns(a attackArgs, t *tally) {
	var open, peak atomic.Int64
	dialing := make(chan struct{}, 64) // dials in flight
	var wg sync.WaitGroup
	redials := a.redials()
	for i := range a.n {
		if a.pastEnd() {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			kind := halfDone[i%len(halfDone)]
			rng := rand.New(rand.NewPCG(a.seed, uint64(i)))
			for range 1 + redials {
				dialing <- struct{}{}
				c, err := net.DialTimeout("unix", a.sock, 2*time.Second)
				<-dialing
				if err != nil {
					t.add("dial refused", 1)
				} else {
					now := open.Add(1)
					for p := peak.Load(); now > p && !peak.CompareAndSwap(p, now); p = peak.Load() {
					}
					t.add("opened "+kind.name, 1)
					closedByCorkd := holdConn(c, kind.name, kind.write, a.until)
					open.Add(-1)
					if closedByCorkd {
						t.add("closed by corkd", 1)
					}
				}
				// Open it again a second or two later: thousands of
				// peers that come back, not one that spins.
				time.Sleep(time.Second + time.Duration(rng.IntN(1000))*time.Millisecond)
				if a.pastEnd() {
					return
				}
			}
		}()
	}
	wg.Wait()
	t.max("held at once", int(peak.Load()))
}

// holdConn writes the connection's part and reads what corkd sends until
// the end; it reports whether corkd closed it first.
func holdConn(c net.Conn, kind string, write func(net.Conn) error, until time.Time) bool {
	defer c.Close()
	c.SetDeadline(until)
	if write(c) != nil {
		return !time.Now().After(until)
	}
	if kind == "pinging" {
		go pingUntil(c, until)
	}
	io.Copy(io.Discard, c)
	return time.Now().Before(until)
}

// pingUntil sends a Ping every second during the handshake: a ping must
// not keep a connection pending for ever.
func pingUntil(c net.Conn, until time.Time) {
	ping := make([]byte, protocol.HeaderSize+4)
	protocol.PutHeader(ping, protocol.TypePing, 4)
	for time.Now().Before(until) {
		time.Sleep(time.Second)
		if _, err := c.Write(ping); err != nil {
			return
		}
	}
}
