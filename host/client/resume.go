package client

import (
	"context"
	"time"

	"github.com/corkvm/cork/protocol"
)

// resume reconnects to the agent and attaches again from output byte seen,
// as the holder the agent numbered, retrying with backoff for up to
// s.Reconnect. An agent whose session another client took over meanwhile
// answers Detached, which ends Run.
func (s *Session) resume(ctx context.Context, l *link, seen, holder uint64) error {
	deadline := time.Now().Add(s.Reconnect)
	backoff := 10 * time.Millisecond
	for {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		err := s.reattach(ctx, l, seen, holder)
		if err == nil {
			s.Resumes++
			return nil
		}
		if time.Now().Add(backoff).After(deadline) {
			return err
		}
		time.Sleep(backoff)
		backoff = min(2*backoff, time.Second)
	}
}

func (s *Session) reattach(ctx context.Context, l *link, seen, holder uint64) error {
	conn, err := s.Redial(ctx)
	if err != nil {
		return err
	}
	r, w := protocol.NewReader(conn), protocol.NewWriter(conn)
	if _, err := Hello(r, w, s.Software); err != nil {
		conn.Close()
		return err
	}
	// Numbered, so that the agent tells this try from an earlier one it
	// reads late, from a connection given up on.
	l.attempts++
	a := &protocol.Attach{Session: s.ID, Resume: &seen, Holder: holder, Attempt: l.attempts, Size: l.currentSize()}
	if err := w.WriteJSON(protocol.TypeAttach, a); err != nil {
		conn.Close()
		return err
	}
	l.swap(conn, r, w)
	return nil
}
