package agent

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/corkvm/cork/guest/procfs"
	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/streams"
)

// guestListeners are the listeners one forwarding connection asked for
// (remote forwards, as ssh -R): each connection one accepts becomes a
// stream the agent opens to the host. They close with the connection.
type guestListeners struct {
	srv        *Server
	user       *userThread          // the connection's: its sockets are made and removed as its account
	warn, info func(string, ...any) // limited to a line a second per message (limitLog)
	m          *streams.Mux         // set before the connection is read

	mu     sync.Mutex
	open   []net.Listener
	closed bool
}

// control serves a Listen, on the connection's reader: binding a port or
// a socket does not wait.
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
		g.warn("listen refused", "port", req.Port, "path", req.Path, "err", err)
		answer.Error = err.Error()
	}
	return g.m.WriteJSON(protocol.TypeListening, answer)
}

// listen binds req's port on the guest's loopback, or makes its socket,
// within the limits.
func (g *guestListeners) listen(req *protocol.Listen) (string, error) {
	acct := g.user.acct
	if g.srv.cfg.Forward.Mode != ForwardAll {
		return "", fmt.Errorf("corkd does not listen for the host: it forwards only from the host to the guest (corkd serve --forwarding=all would allow it)")
	}
	if req.Path == "" && req.Port != 0 && req.Port < 1024 && acct.UID != 0 {
		return "", fmt.Errorf("port %d is privileged: only root may listen on it, not %s", req.Port, acct.Name)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return "", net.ErrClosed
	}
	if len(g.open) >= protocol.MaxListens {
		return "", fmt.Errorf("this connection already has %d listeners, the most corkd keeps for one", len(g.open))
	}
	var l net.Listener
	var err error
	if req.Path != "" {
		l, err = listenUnixAs(g.user, req.Path)
	} else {
		l, err = net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(req.Port))))
	}
	if err != nil {
		return "", err
	}
	g.open = append(g.open, l)
	go g.serve(l, req.ID)
	return l.Addr().String(), nil
}

// serve opens a stream to the host for each connection l accepts,
// counted against the streams of the uid that made the connection:
// another user of the guest who connects to the listener over and over
// uses up its own streams, not the forwarding user's.
func (g *guestListeners) serve(l net.Listener, id uint32) {
	to := strconv.FormatUint(uint64(id), 10)
	acceptEach(l, g.warn, func(c net.Conn) {
		uid, err := connectingUID(c)
		if err != nil {
			g.warn("connection refused: its maker is unknown", "listener", to, "err", err)
			c.Close()
			return
		}
		if release, ok := g.srv.takeStream(uid, g.warn, c, to); ok {
			go g.srv.carryToHost(g.m, release, g.info, c, protocol.NetListener, to)
		}
	})
}

// connectingUID is the uid that made c, a connection one of the agent's
// listeners accepted: the peer's SO_PEERCRED on a unix socket; on a
// loopback TCP port, the owner of the connecting socket in the kernel's
// TCP tables, which must still be held by a process (a socket already
// closed shows no owner, and its connection is usually gone too).
func connectingUID(c net.Conn) (uint32, error) {
	switch c := c.(type) {
	case *net.UnixConn:
		return peerUID(c)
	case *net.TCPConn:
		local, remote := c.LocalAddr().(*net.TCPAddr).AddrPort(), c.RemoteAddr().(*net.TCPAddr).AddrPort()
		s, err := procfs.FindTCP(remote, local)
		if err != nil {
			return 0, err
		}
		if s.Inode == 0 {
			return 0, fmt.Errorf("the socket from %v was closed already", remote)
		}
		return s.UID, nil
	}
	return 0, fmt.Errorf("a connection of type %T", c)
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

// takeStream counts c, a connection uid made to one of the agent's
// listeners, against uid's streams, and returns the release. A
// connection past the limits is closed, and false returned.
func (s *Server) takeStream(uid uint32, warn func(string, ...any), c net.Conn, to string) (release func(), ok bool) {
	release, err := s.streams.take(uid, s.cfg.Forward.MaxStreamsPerUID, s.cfg.Forward.MaxStreams)
	if err != nil {
		warn("connection refused", "to", to, "uid", uid, "err", err)
		c.Close()
		return nil, false
	}
	return release, true
}

// carryToHost carries c, a connection made to one of the agent's
// listeners in the guest and counted until release, on a stream it opens
// to the host.
func (s *Server) carryToHost(m *streams.Mux, release func(), info func(string, ...any), c net.Conn, network uint8, address string) {
	st, err := m.OpenFor(network, address, c)
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

// close closes every listener, removing the sockets it made; none opens
// after it.
func (g *guestListeners) close() {
	g.mu.Lock()
	g.closed = true
	open := g.open
	g.open = nil
	g.mu.Unlock()
	for _, l := range open {
		if err := l.Close(); err != nil {
			g.warn("closing a listener", "address", l.Addr().String(), "err", err)
		}
	}
}
