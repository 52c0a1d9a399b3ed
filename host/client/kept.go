package client

import (
	"fmt"
	"io"

	"github.com/corkvm/cork/protocol"
)

// Requests about kept sessions other than attaching: one request, one
// answer, on a connection of their own.

// List returns the kept sessions the agent lets this host see.
func List(conn io.ReadWriteCloser, software string) ([]protocol.SessionInfo, error) {
	var s protocol.Sessions
	if err := request(conn, software, protocol.TypeList, nil, protocol.TypeSessions, &s); err != nil {
		return nil, err
	}
	return s.Sessions, nil
}

// Kill sends signal (a name of protocol.Signals) to a kept session's
// programs, or hangs it up when signal is empty.
func Kill(conn io.ReadWriteCloser, software, session, signal string) error {
	var d protocol.Done
	return request(conn, software, protocol.TypeKill, &protocol.Kill{Session: session, Signal: signal}, protocol.TypeDone, &d)
}

// Remove forgets an exited kept session.
func Remove(conn io.ReadWriteCloser, software, session string) error {
	var d protocol.Done
	return request(conn, software, protocol.TypeRemove, &protocol.Remove{Session: session}, protocol.TypeDone, &d)
}

// request says hello, sends one request and decodes the answer of type
// want into v. It closes conn.
func request(conn io.ReadWriteCloser, software string, t protocol.Type, req any, want protocol.Type, v any) error {
	defer conn.Close()
	r, w := protocol.NewReader(conn), protocol.NewWriter(conn)
	if err := keptHello(r, w, software); err != nil {
		return err
	}
	var p []byte
	if req != nil {
		p = protocol.MustJSON(req)
	}
	if err := w.WriteFrame(t, p); err != nil {
		return fmt.Errorf("sending %s: %w", t, err)
	}
	p, err := answer(r, t, want)
	if err != nil {
		return err
	}
	return protocol.Decode(want, p, v)
}

// Peek returns a kept session's screen, without attaching to it.
func Peek(conn io.ReadWriteCloser, software, session string, ansi bool) (*protocol.Snapshot, error) {
	var s protocol.Snapshot
	if err := request(conn, software, protocol.TypePeek, &protocol.Peek{Session: session, ANSI: ansi}, protocol.TypeSnapshot, &s); err != nil {
		return nil, err
	}
	return &s, nil
}
