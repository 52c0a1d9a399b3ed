//go:build linux

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/corkvm/cork/host/client"
	"github.com/corkvm/cork/protocol"
)

// peer is one connection to corkd spoken by hand, every read and write
// under a deadline, so that no attacker or monitor can hang on corkd.
type peer struct {
	conn net.Conn
	r    *protocol.Reader
	w    *protocol.Writer
}

// opTimeout bounds each exchange with corkd that is expected to be quick.
const opTimeout = 10 * time.Second

func dial(sock string) (*peer, error) {
	c, err := net.DialTimeout("unix", sock, opTimeout)
	if err != nil {
		return nil, err
	}
	return &peer{conn: c, r: protocol.NewReader(c), w: protocol.NewWriter(c)}, nil
}

// dialHello dials and exchanges hellos.
func dialHello(sock string) (*peer, error) {
	p, err := dial(sock)
	if err != nil {
		return nil, err
	}
	p.conn.SetDeadline(time.Now().Add(opTimeout))
	if _, err := client.Hello(p.r, p.w, "cork-chaos"); err != nil {
		p.conn.Close()
		return nil, err
	}
	p.conn.SetDeadline(time.Time{})
	return p, nil
}

func (p *peer) close() { p.conn.Close() }

// send writes one frame: raw bytes as they are, anything else as JSON.
func (p *peer) send(t protocol.Type, v any) error {
	p.conn.SetWriteDeadline(time.Now().Add(opTimeout))
	if b, ok := v.([]byte); ok {
		return p.w.WriteFrame(t, b)
	}
	return p.w.WriteJSON(t, v)
}

// expect reads frames until one of type t, within d, and decodes it into
// v when v is not nil. An Error frame is returned as an error.
func (p *peer) expect(t protocol.Type, d time.Duration, v any) error {
	p.conn.SetReadDeadline(time.Now().Add(d))
	defer p.conn.SetReadDeadline(time.Time{})
	for {
		typ, payload, err := p.r.Next()
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", t, err)
		}
		switch {
		case typ == t:
			if v == nil {
				return nil
			}
			return protocol.Decode(t, payload, v)
		case typ == protocol.TypeError:
			var e protocol.Error
			json.Unmarshal(payload, &e)
			return fmt.Errorf("waiting for %s: corkd's error: %w", t, &e)
		}
	}
}

// exec starts req and returns corkd's Started.
func (p *peer) exec(req protocol.Exec) (protocol.Started, error) {
	var st protocol.Started
	if err := p.send(protocol.TypeExec, &req); err != nil {
		return st, err
	}
	return st, p.expect(protocol.TypeStarted, opTimeout, &st)
}

// keep starts argv as a kept session of the peer's uid on a new
// connection, and returns the connection, still attached.
func keep(sock, name string, size protocol.WindowSize, argv ...string) (*peer, protocol.Started, error) {
	p, err := dialHello(sock)
	if err != nil {
		return nil, protocol.Started{}, err
	}
	st, err := p.exec(protocol.Exec{Argv: argv, TTY: true, Keep: true, Name: name, Size: size})
	if err != nil {
		p.close()
		return nil, st, fmt.Errorf("keeping %s: %w", name, err)
	}
	return p, st, nil
}

// outputUntil reads output frames until n bytes came or d passed.
func (p *peer) outputUntil(n int, d time.Duration) (int, error) {
	p.conn.SetReadDeadline(time.Now().Add(d))
	defer p.conn.SetReadDeadline(time.Time{})
	got := 0
	for got < n {
		t, b, err := p.r.NextShared()
		if err != nil {
			return got, err
		}
		if t == protocol.TypeStdout {
			got += len(b)
		}
	}
	return got, nil
}

// request makes one kept-session request (List, Peek, Kill, Remove) on a
// connection of its own and decodes the answer into v.
func request(sock string, t protocol.Type, req any, want protocol.Type, v any, d time.Duration) error {
	p, err := dialHello(sock)
	if err != nil {
		return err
	}
	defer p.close()
	if req == nil {
		req = []byte(nil)
	}
	if err := p.send(t, req); err != nil {
		return err
	}
	return p.expect(want, d, v)
}

// errTimeout reports whether err is a deadline that passed.
func errTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
