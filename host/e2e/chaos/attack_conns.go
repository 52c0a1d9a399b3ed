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

// halfDone are the ways the connections attack holds a connection short of
// a session, each stopping at another point of the handshake (or pinging
// there), so that every deadline and budget corkd has before a session is
// met by n connections at once until the attack ends; one that corkd
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
	f := &connFlood{a: a, t: t, dialing: make(chan struct{}, 64), redials: a.redials()}
	var wg sync.WaitGroup
	for i := range a.n {
		if a.pastEnd() {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.keepOpen(halfDone[i%len(halfDone)].name, halfDone[i%len(halfDone)].write, rand.New(rand.NewPCG(a.seed, uint64(i))))
		}()
	}
	wg.Wait()
}

// connFlood is the connections attack's state, shared by its connections.
type connFlood struct {
	a       attackArgs
	t       *tally
	open    atomic.Int64
	dialing chan struct{} // a slot per dial in flight
	redials int
}

// keepOpen holds one connection of a kind open until the attack ends,
// opening it again a second or two after corkd closes or refuses it:
// thousands of peers that come back, not one that spins.
func (f *connFlood) keepOpen(kind string, write func(net.Conn) error, rng *rand.Rand) {
	for range 1 + f.redials {
		f.dialing <- struct{}{}
		c, err := net.DialTimeout("unix", f.a.sock, 2*time.Second)
		<-f.dialing
		if err != nil {
			f.t.add("dial refused", 1)
		} else {
			f.t.max("held at once", int(f.open.Add(1)))
			f.t.add("opened "+kind, 1)
			closedByCorkd := holdConn(c, kind, write, f.a.until)
			f.open.Add(-1)
			if closedByCorkd {
				f.t.add("closed by corkd", 1)
			}
		}
		time.Sleep(time.Second + time.Duration(rng.IntN(1000))*time.Millisecond)
		if f.a.pastEnd() {
			return
		}
	}
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
