// Package prototest speaks the protocol by hand, for tests of either side:
// a Peer that sends frames and waits for the ones it expects, and frames
// built byte by byte for tests that misbehave on purpose. It is to cork's
// protocol what net/http/httptest is to HTTP; SocketPair and Serve give
// it the connections to speak on.
package prototest

import (
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/corkvm/cork/protocol"
)

// Peer is one end of a connection, driven by a test. Every method fails
// the test on an error it did not ask for.
type Peer struct {
	t    testing.TB
	Conn io.ReadWriteCloser
	R    *protocol.Reader
	W    *protocol.Writer
}

// NewPeer drives conn.
func NewPeer(t testing.TB, conn io.ReadWriteCloser) *Peer {
	return &Peer{t: t, Conn: conn, R: protocol.NewReader(conn), W: protocol.NewWriter(conn)}
}

// Payload encodes v as a frame payload: raw bytes, nothing for nil, JSON
// for anything else.
func Payload(v any) []byte {
	switch v := v.(type) {
	case []byte:
		return v
	case nil:
		return nil
	}
	p, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return p
}

// Frame returns a whole frame of type t carrying v (see Payload).
func Frame(t protocol.Type, v any) []byte {
	p := Payload(v)
	b := make([]byte, protocol.HeaderSize+len(p))
	protocol.PutHeader(b, t, len(p))
	copy(b[protocol.HeaderSize:], p)
	return b
}

// Header returns a frame header announcing n bytes, whatever follows it.
func Header(t protocol.Type, n uint32) []byte {
	b := make([]byte, protocol.HeaderSize)
	protocol.PutHeader(b, t, 0)
	b[1], b[2], b[3], b[4] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
	return b
}

// Send writes one frame carrying v (see Payload).
func (p *Peer) Send(t protocol.Type, v any) {
	p.t.Helper()
	if err := p.W.WriteFrame(t, Payload(v)); err != nil {
		p.t.Fatalf("sending %s: %v", t, err)
	}
}

// Hello sends a host's hello for the versions this package speaks and
// returns the agent's answer.
func (p *Peer) Hello() protocol.Hello {
	p.t.Helper()
	p.Send(protocol.TypeHello, &protocol.Hello{MinVersion: protocol.MinVersion, MaxVersion: protocol.MaxVersion, Software: "prototest"})
	var h protocol.Hello
	p.Decode(protocol.TypeHello, p.Expect(protocol.TypeHello), &h)
	return h
}

// Exec sends req and returns the agent's Started.
func (p *Peer) Exec(req protocol.Exec) protocol.Started {
	p.t.Helper()
	p.Send(protocol.TypeExec, &req)
	var st protocol.Started
	p.Decode(protocol.TypeStarted, p.Expect(protocol.TypeStarted), &st)
	return st
}

// Expect reads frames until one of type t and returns its payload. Frames
// of other types are skipped, but an Error frame, when t is not
// TypeError, and the end of the connection fail the test.
func (p *Peer) Expect(t protocol.Type) []byte {
	p.t.Helper()
	for {
		typ, payload, err := p.R.Next()
		if err != nil {
			p.t.Fatalf("waiting for a %s frame: %v", t, err)
		}
		switch {
		case typ == t:
			return payload
		case typ == protocol.TypeError:
			p.t.Fatalf("waiting for a %s frame: the peer sent error %s", t, payload)
		}
	}
}

// ExpectError reads frames until an Error and checks its kind and that its
// message holds text.
func (p *Peer) ExpectError(kind, text string) protocol.Error {
	p.t.Helper()
	var e protocol.Error
	p.Decode(protocol.TypeError, p.Expect(protocol.TypeError), &e)
	if e.Kind != kind || !strings.Contains(e.Message, text) {
		p.t.Fatalf("error %+v, want kind %s naming %q", e, kind, text)
	}
	return e
}

// Output reads a session's frames up to its Exit and returns its output;
// stdout holds what a terminal is sent: output and screens restored.
// each, when not nil, sees the output so far after every frame, so that a
// test can answer it (type a line, send a signal).
func (p *Peer) Output(each func(stdout string)) (stdout, stderr string, exit protocol.Exit) {
	p.t.Helper()
	var out, errOut strings.Builder
	for {
		typ, payload, err := p.R.Next()
		if err != nil {
			p.t.Fatalf("after output %q: %v", out.String(), err)
		}
		switch typ {
		case protocol.TypeStdout, protocol.TypeRestore:
			out.Write(payload)
		case protocol.TypeStderr:
			errOut.Write(payload)
		case protocol.TypeExit:
			p.Decode(typ, payload, &exit)
			return out.String(), errOut.String(), exit
		case protocol.TypeError:
			p.t.Fatalf("after output %q: error %s", out.String(), payload)
		}
		if each != nil && (typ == protocol.TypeStdout || typ == protocol.TypeStderr) {
			each(out.String())
		}
	}
}

// Drain reads and drops frames until the connection ends, so that output
// never blocks the other side; it returns at once.
func (p *Peer) Drain() {
	go func() {
		for {
			if _, _, err := p.R.Next(); err != nil {
				return
			}
		}
	}()
}

// Decode decodes a JSON payload of a frame of type t into v.
func (p *Peer) Decode(t protocol.Type, payload []byte, v any) {
	p.t.Helper()
	if err := protocol.Decode(t, payload, v); err != nil {
		p.t.Fatal(err)
	}
}
