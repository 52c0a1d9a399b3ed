package agent

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/corkvm/cork/guest/account"
	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/streams"
)

// guestListeners are the listeners one forwarding connection asked for
// (remote forwards, as ssh -R): each connection one accepts becomes a
// stream the agent opens to the host. They close with the connection.
type guestListeners struct {
	srv        *Server
	acct       *account.Account
	warn, info func(string, ...any) // limited to a line a second per message (limitLog)
	m          *streams.Mux         // set before the connection is read

	mu     sync.Mutex
	open   []net.Listener
	closed bool
}

// control serves a Listen, on the connection's reader: binding a port does
// not wait.
func (g *guestListeners) control(t protocol.Type, p []byte) error {
	if t != protocol.TypeListen {
		return fmt.Errorf("protocol: %s from the host", t)
	}
	var req protocol.Listen
	if err := protocol.Decode(t, p, &req); err != nil {
		return err
	}
	if err := req.Validate(); err != nil {
		return err
	}
	addr, err := g.listen(&req)
	answer := &protocol.Listening{ID: req.ID, Address: addr}
	if err != nil {
		g.warn("listen refused", "port", req.Port, "err", err)
		answer.Error = err.Error()
	}
	return g.m.WriteJSON(protocol.TypeListening, answer)
}

// listen binds req's port on the guest's loopback, within the limits.
func (g *guestListeners) listen(req *protocol.Listen) (string, error) {
	if g.srv.cfg.Forward.Mode != ForwardAll {
		return "", fmt.Errorf("corkd does not listen for the host: it forwards only from the host to the guest (corkd serve --forwarding=all would allow it)")
	}
	if req.Port != 0 && req.Port < 1024 && g.acct.UID != 0 {
		return "", fmt.Errorf("port %d is privileged: only root may listen on it, not %s", req.Port, g.acct.Name)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return "", net.ErrClosed
	}
	if len(g.open) >= protocol.MaxListens {
		return "", fmt.Errorf("this connection already has %d listeners, the most corkd keeps for one", len(g.open))
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(req.Port))))
	if err != nil {
		return "", err
	}
	g.open = append(g.open, l)
	go g.serve(l, req.ID)
	return l.Addr().String(), nil
}

// serve opens a stream to the host for each connection l accepts.
func (g *guestListeners) serve(l net.Listener, id uint32) {
	acceptEach(l, g.warn, func(c net.Conn) { go g.carry(c, id) })
}

// acceptEach calls handle for each connection l accepts, until l is
// closed. A failed accept (out of file descriptors) is tried again after
// a pause that doubles from 5 ms to a second, as net/http's Server does:
// a burst of connections must not end a listener for good.
func acceptEach(l net.Listener, warn func(string, ...any), handle func(net.Conn)) {
	var pause time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			warn("accepting a connection failed; trying again", "err", err, "pause", pause)
			time.Sleep(pause)
			continue
		}
		pause = 0
		handle(c)
	}
}

func (g *guestListeners) carry(c net.Conn, id uint32) {
	g.srv.carryToHost(g.m, g.acct, g.warn, g.info, c, protocol.NetListener, strconv.FormatUint(uint64(id), 10))
}

// carryToHost carries c, a connection made to one of the agent's
// listeners in the guest, on a stream it opens to the host, counted
// against acct's streams.
func (s *Server) carryToHost(m *streams.Mux, acct *account.Account, warn, info func(string, ...any), c net.Conn, network uint8, address string) {
	release, err := s.streamsPerUID.take(acct.UID, s.cfg.Forward.MaxStreamsPerUID, s.cfg.Forward.MaxStreams)
	if err != nil {
		warn("connection refused", "to", address, "err", err)
		c.Close()
		return
	}
	st, err := m.Open(network, address)
	if err != nil {
		info("the host did not take a connection", "to", address, "err", err)
		release()
		c.Close()
		return
	}
	st.WhenGone(release)
	streams.Join(st, c, info)
	if err := st.Answer(); err != nil {
		info("the host did not take a connection", "to", address, "err", err) // early data: the refusal ended the join
	}
}

// close closes every listener; none opens after it.
func (g *guestListeners) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	for _, l := range g.open {
		l.Close()
	}
}
