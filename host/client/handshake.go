package client

import (
	"errors"
	"fmt"
	"io"

	"github.com/corkvm/cork/protocol"
)

// Hello exchanges Hello frames and returns the agent's.
func Hello(r *protocol.Reader, w *protocol.Writer, software string) (*protocol.Hello, error) {
	if err := sendHello(w, software); err != nil {
		return nil, err
	}
	return readHello(r)
}

func hello(software string) *protocol.Hello {
	return &protocol.Hello{
		MinVersion: protocol.MinVersion, MaxVersion: protocol.MaxVersion,
		Capabilities: []string{protocol.CapTTY, protocol.CapPipes, protocol.CapSignal, protocol.CapPing, protocol.CapKeep},
		Software:     software,
	}
}

func sendHello(w *protocol.Writer, software string) error {
	if err := w.WriteJSON(protocol.TypeHello, hello(software)); err != nil {
		return fmt.Errorf("sending hello: %w", err)
	}
	return nil
}

// readHello reads the agent's answer to the hello and checks that a
// version was agreed.
func readHello(r *protocol.Reader) (*protocol.Hello, error) {
	t, p, err := r.Next()
	if err != nil {
		if err == io.EOF {
			return nil, errors.New("corkd closed the connection before its hello")
		}
		return nil, fmt.Errorf("reading corkd's hello: %w", err)
	}
	switch t {
	case protocol.TypeHello:
	case protocol.TypeError:
		return nil, decodeError(p)
	default:
		return nil, fmt.Errorf("corkd sent %s before its hello", t)
	}
	var h protocol.Hello
	if err := protocol.Decode(t, p, &h); err != nil {
		return nil, err
	}
	if _, err := protocol.Negotiate(h, protocol.MinVersion, protocol.MaxVersion); err != nil {
		return nil, err
	}
	return &h, nil
}

// keptHello is Hello with an agent that must speak the protocol version
// with kept sessions.
func keptHello(r *protocol.Reader, w *protocol.Writer, software string) error {
	h, err := Hello(r, w, software)
	if err != nil {
		return err
	}
	if h.Version < 2 {
		return &CannotKeepError{Software: h.Software}
	}
	return nil
}

// open says hello and sends s's request: its Exec or its Attach.
func (s *Session) open(r *protocol.Reader, w *protocol.Writer) error {
	if s.plain() {
		return s.openPlain(r, w)
	}
	if err := keptHello(r, w, s.Software); err != nil {
		return err
	}
	var err error
	if s.Attach != nil {
		err = w.WriteJSON(protocol.TypeAttach, s.Attach)
	} else {
		err = w.WriteJSON(protocol.TypeExec, &s.Exec)
	}
	if err != nil {
		return fmt.Errorf("sending the request: %w", err)
	}
	return nil
}

// openPlain sends a plain Exec with the hello, in one write, instead of
// a round trip later: every version runs it, the agent reads it once it
// has answered, and a refusal of the hello still comes first.
func (s *Session) openPlain(r *protocol.Reader, w *protocol.Writer) error {
	b, err := protocol.AppendJSON(nil, protocol.TypeHello, hello(s.Software))
	if err == nil {
		b, err = protocol.AppendJSON(b, protocol.TypeExec, &s.Exec)
	}
	if err == nil {
		err = w.WriteFramed(b)
	}
	if err != nil {
		return fmt.Errorf("sending the request: %w", err)
	}
	_, err = readHello(r)
	return err
}
