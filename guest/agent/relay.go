package agent

import (
	"fmt"
	"io"

	"github.com/corkvm/cork/protocol"
)

// relay hands a request about kept sessions to the agent that keeps them
// (Config.KeptVia) and copies the connection both ways until either side
// ends. The host already said hello to this agent; the relay says its own
// to the other, which speaks the same protocol, being the same corkd.
func (s *Server) relay(h *handshake, t protocol.Type, p []byte) {
	conn, err := s.cfg.KeptVia()
	if err != nil {
		h.refuse(protocol.KindKeep, fmt.Sprintf("cannot reach the corkd that keeps sessions: %v", err))
		return
	}
	defer conn.Close()
	r, w := protocol.NewReader(conn), protocol.NewWriter(conn)
	if err := w.WriteJSON(protocol.TypeHello, &protocol.Hello{MinVersion: 2, MaxVersion: protocol.MaxVersion,
		Capabilities: []string{protocol.CapKeep}, Software: s.cfg.Software + " (relay)"}); err != nil {
		h.refuse(protocol.KindKeep, fmt.Sprintf("the corkd that keeps sessions: %v", err))
		return
	}
	rt, rp, err := r.Next()
	switch {
	case err != nil:
		h.refuse(protocol.KindKeep, fmt.Sprintf("the corkd that keeps sessions: %v", err))
		return
	case rt == protocol.TypeError:
		h.w.WriteFrame(rt, rp)
		return
	case rt != protocol.TypeHello:
		h.refuse(protocol.KindKeep, fmt.Sprintf("the corkd that keeps sessions answered hello with %s", rt))
		return
	}
	if err := w.WriteFrame(t, p); err != nil {
		h.refuse(protocol.KindKeep, fmt.Sprintf("the corkd that keeps sessions: %v", err))
		return
	}
	s.log.Info("relaying to the corkd that keeps sessions", "request", t.String())
	done := make(chan struct{}, 2)
	go func() { io.Copy(conn, h.r.Rest()); done <- struct{}{} }()
	go func() { io.Copy(h.c, r.Rest()); done <- struct{}{} }()
	<-done
}
