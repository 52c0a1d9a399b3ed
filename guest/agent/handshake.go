package agent

import (
	"fmt"
	"io"
	"time"

	"github.com/corkvm/cork/protocol"
)

// handshake takes a connection from its first byte to its request: the
// hello exchange, then any pings, within the handshake timeout.
type handshake struct {
	srv     *Server
	c       io.ReadWriteCloser
	r       *protocol.Reader
	w       *protocol.Writer
	version int // negotiated
}

// refuse tells the peer why it is refused; the connection ends after it.
func (h *handshake) refuse(kind, msg string) {
	h.srv.log.Warn("refused", "kind", kind, "err", msg)
	h.w.WriteJSON(protocol.TypeError, &protocol.Error{Kind: kind, Message: msg})
}

// request decodes the request p into v and checks it with its Validate
// method, if it has one. It reports false, the refusal sent, when either
// fails.
func (h *handshake) request(t protocol.Type, p []byte, v any) bool {
	err := protocol.Decode(t, p, v)
	if vv, ok := v.(interface{ Validate() error }); ok && err == nil {
		err = vv.Validate()
	}
	if err != nil {
		h.refuse(protocol.KindRequest, err.Error())
		return false
	}
	return true
}

// run exchanges hellos, answers pings, and returns the first other frame:
// the request. It reports false when the connection ended or was refused
// (the refusal sent).
func (h *handshake) run() (protocol.Type, []byte, bool) {
	// A peer that sends half a frame and stops must not hold the
	// connection forever. Closing it is the one way to interrupt a read
	// on every kind of stream.
	timeout := h.srv.cfg.HandshakeTimeout
	timer := time.AfterFunc(timeout, func() {
		h.srv.log.Warn("handshake timed out", "after", timeout)
		h.c.Close()
	})
	defer timer.Stop()

	t, p, err := h.r.Next()
	if err != nil {
		if err != io.EOF {
			h.refuse(protocol.KindProtocol, fmt.Sprintf("reading hello: %v", err))
		}
		return 0, nil, false
	}
	if t != protocol.TypeHello {
		h.refuse(protocol.KindProtocol, fmt.Sprintf("expected a hello frame first, got %s", t))
		return 0, nil, false
	}
	var hello protocol.Hello
	if err := protocol.Decode(t, p, &hello); err != nil {
		h.refuse(protocol.KindProtocol, err.Error())
		return 0, nil, false
	}
	v, err := protocol.Negotiate(hello, protocol.MinVersion, protocol.MaxVersion)
	if err != nil {
		h.refuse(protocol.KindVersion, err.Error())
		return 0, nil, false
	}
	h.version = v
	caps := []string{protocol.CapTTY, protocol.CapPipes, protocol.CapSignal, protocol.CapPing}
	if v >= 2 {
		caps = append(caps, protocol.CapKeep, protocol.CapCopy, protocol.CapCopyHardlinks)
	}
	if err := h.w.WriteJSON(protocol.TypeHello, &protocol.Hello{
		MinVersion: protocol.MinVersion, MaxVersion: protocol.MaxVersion, Version: v,
		Capabilities: caps,
		Software:     h.srv.cfg.Software,
	}); err != nil {
		return 0, nil, false
	}

	for {
		timer.Reset(timeout)
		t, p, err = h.r.Next()
		if err != nil {
			if err != io.EOF {
				h.refuse(protocol.KindProtocol, fmt.Sprintf("reading the request: %v", err))
			}
			return 0, nil, false
		}
		if t != protocol.TypePing {
			break
		}
		if len(p) > protocol.MaxPing {
			h.refuse(protocol.KindProtocol, fmt.Sprintf("ping of %d bytes, the limit is %d", len(p), protocol.MaxPing))
			return 0, nil, false
		}
		if h.w.WriteFrame(protocol.TypePong, p) != nil {
			return 0, nil, false
		}
	}
	if !timer.Stop() {
		return 0, nil, false // the timer fired and closed the connection as the request arrived
	}
	return t, p, true
}
