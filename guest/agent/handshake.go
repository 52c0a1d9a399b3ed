package agent

import (
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/corkvm/cork/protocol"
)

// handshake takes a connection from its first byte to its request: the
// hello exchange, then any pings. The connection has the handshake timeout
// from its first byte to be admitted to a session, or to have its request
// answered: pings do not extend it, so that no connection stays pending
// for longer.
type handshake struct {
	srv     *Server
	c       io.ReadWriteCloser
	r       *protocol.Reader
	w       *protocol.Writer
	version int   // negotiated
	entry   *conn // c in the agent's table of connections
	// deadline closes c when the timeout is up: a peer that sends half a
	// frame and stops must not hold the connection, and closing it is the
	// one way to interrupt a read on every kind of stream.
	deadline *time.Timer
	expired  atomic.Bool // the deadline closed c: the read it cut is no refusal
}

// startHandshake arms the connection's deadline; the caller stops it.
func (s *Server) startHandshake(c io.ReadWriteCloser, w *protocol.Writer, entry *conn) *handshake {
	r := protocol.NewReader(c)
	r.SetLimit(s.cfg.MaxFrame)
	h := &handshake{srv: s, c: c, r: r, w: w, entry: entry}
	r.SetCheck(h.checkFrame)
	timeout := s.cfg.HandshakeTimeout
	h.deadline = time.AfterFunc(timeout, func() {
		h.expired.Store(true)
		s.warnPeer(entry.peer, "handshake timed out", "after", timeout)
		c.Close()
	})
	return h
}

// admitted takes the connection out of the pending ones, into a session:
// its deadline no longer applies. It reports false, and the connection
// must end, when the deadline has already closed it or corkd is shutting
// down.
func (h *handshake) admitted() bool { return h.admit(false) }

// admittedToStart is admitted for a request that starts a session: until
// the caller calls conns.started, Shutdown waits for the session to be
// tracked, so that it cannot miss the hang-up.
func (h *handshake) admittedToStart() bool { return h.admit(true) }

func (h *handshake) admit(starts bool) bool {
	if !h.deadline.Stop() {
		return false // the deadline fired and closed the connection as it was admitted
	}
	if !h.srv.conns.admit(h.entry, starts) {
		h.refuse(protocol.KindBusy, errShuttingDown.Error())
		return false
	}
	h.r.SetCheck(nil) // its session's frames are bounded as a session's
	return true
}

// maxHello bounds a hello's payload: a version range, a few capabilities
// and the software's name. A larger one is refused before it is allocated,
// so that it takes nothing from the budget of real requests.
const maxHello = 4 << 10

// checkFrame bounds what a frame read before admission makes the agent
// allocate: a hello or a ping is small, and every payload is charged to
// its peer's and to all pending connections' budget before it is
// allocated. A connection may announce a frame of --max-frame and stop;
// without the budget, each pending one could hold that much.
func (h *handshake) checkFrame(t protocol.Type, n uint32) error {
	switch {
	case t == protocol.TypeHello && n > maxHello:
		return &protocol.Error{Kind: protocol.KindProtocol, Message: fmt.Sprintf("hello of %d bytes, the limit is %d", n, maxHello)}
	case t == protocol.TypePing && n > protocol.MaxPing:
		return &protocol.Error{Kind: protocol.KindProtocol, Message: fmt.Sprintf("ping of %d bytes, the limit is %d", n, protocol.MaxPing)}
	}
	if err := h.srv.conns.charge(h.entry, int(n)); err != nil {
		return &protocol.Error{Kind: protocol.KindBusy, Message: err.Error()}
	}
	return nil
}

// refuse tells the peer why it is refused; the connection ends after it.
func (h *handshake) refuse(kind, msg string) {
	if h.expired.Load() {
		return // c is closed, and the timeout was logged
	}
	h.srv.warnPeer(h.entry.peer, "refused", "kind", kind, "err", msg)
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

// speaks2 reports whether the connection speaks protocol version 2, which
// a request of type t needs, or refuses it.
func (h *handshake) speaks2(t protocol.Type) bool {
	if h.version < 2 {
		h.refuse(protocol.KindProtocol, fmt.Sprintf("%s needs protocol version 2; this connection speaks version 1", t))
		return false
	}
	return true
}

// run exchanges hellos, answers pings, and returns the first other frame:
// the request. It reports false when the connection ended or was refused
// (the refusal sent).
func (h *handshake) run() (protocol.Type, []byte, bool) {
	t, p, err := h.r.Next()
	if err != nil {
		h.readFailed("reading hello", err)
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
	if v >= 2 && h.srv.cfg.Forward.forwarding() {
		caps = append(caps, protocol.CapForward, protocol.CapForwardAgent, protocol.CapForwardWatch, protocol.CapForwardListenUnix)
	}
	if err := h.w.WriteJSON(protocol.TypeHello, &protocol.Hello{
		MinVersion: protocol.MinVersion, MaxVersion: protocol.MaxVersion, Version: v,
		Capabilities: caps,
		Software:     h.srv.cfg.Software,
	}); err != nil {
		return 0, nil, false
	}

	for {
		t, p, err = h.r.Next()
		if err != nil {
			h.readFailed("reading the request", err)
			return 0, nil, false
		}
		if t != protocol.TypePing {
			break
		}
		if h.w.WriteFrame(protocol.TypePong, p) != nil {
			return 0, nil, false
		}
	}
	return t, p, true
}

// readFailed refuses a connection whose frame could not be read: with
// checkFrame's refusal, or naming what was being read.
func (h *handshake) readFailed(reading string, err error) {
	var perr *protocol.Error
	switch {
	case err == io.EOF:
	case errors.As(err, &perr):
		h.refuse(perr.Kind, perr.Message)
	default:
		h.refuse(protocol.KindProtocol, fmt.Sprintf("%s: %v", reading, err))
	}
}
