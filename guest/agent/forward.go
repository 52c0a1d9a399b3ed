package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/corkvm/cork/guest/account"
	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/streams"
)

// ForwardMode is what corkd forwards: as sshd's AllowTcpForwarding, local
// forwards (the host reaching the guest) apart from remote ones (guest
// listeners reaching the host).
type ForwardMode string

const (
	ForwardLocal ForwardMode = "local" // the default: the host may reach the guest's ports and sockets
	ForwardNone  ForwardMode = "none"  // no Forward is served
	ForwardAll   ForwardMode = "all"   // local, and guest listeners for the host (remote forwards)
)

// ForwardConfig holds the limits of forwarding. Zero fields take the
// defaults below.
type ForwardConfig struct {
	Mode ForwardMode
	// MaxStreamsPerConn bounds the streams open at once on one connection;
	// MaxStreamsPerUID, those that run as one uid across connections, so
	// that one user cannot take every stream; MaxStreams, all of them:
	// with Window, it bounds the memory streams hold.
	MaxStreamsPerConn int
	MaxStreamsPerUID  int
	MaxStreams        int
	// Window is the bytes corkd buffers per stream before the guest's end
	// reads them: a stream holds at most this much of corkd's memory.
	Window uint32
	// DialTimeout bounds a TCP connect in the guest.
	DialTimeout time.Duration
}

// Defaults for ForwardConfig.
const (
	DefaultMaxStreamsPerConn = 64
	DefaultMaxStreamsPerUID  = 256
	DefaultMaxStreams        = 1024
	DefaultStreamWindow      = 256 << 10
	DefaultDialTimeout       = 10 * time.Second
)

// StreamMemory is about the most of corkd's memory one stream holds: its
// window of buffered bytes, the two copy buffers joining it to its guest
// end, and a frame being written.
const StreamMemory = DefaultStreamWindow + 2*(32<<10) + protocol.MaxStreamData

// MostStreams caps MaxStreams, so that the memory all streams hold
// (MostStreams * StreamMemory) stays bounded whatever corkd is told.
const MostStreams = 4096

func (c *ForwardConfig) setDefaults() {
	setDefault(&c.Mode, ForwardLocal)
	setDefault(&c.MaxStreamsPerConn, DefaultMaxStreamsPerConn)
	setDefault(&c.MaxStreamsPerUID, DefaultMaxStreamsPerUID)
	setDefault(&c.MaxStreams, DefaultMaxStreams)
	c.MaxStreams = min(c.MaxStreams, MostStreams)
	setDefault(&c.Window, DefaultStreamWindow)
	setDefault(&c.DialTimeout, DefaultDialTimeout)
}

// forwarding reports whether the agent serves Forward at all.
func (c *ForwardConfig) forwarding() bool { return c.Mode != ForwardNone }

// forwardRequest serves a Forward: the connection carries streams the host
// opens, each connected in the guest as the request's user. It counts as a
// session against the agent's limits. With ForwardWorker set, a worker
// process of corkd's serves it (forwardworker.go).
func (s *Server) forwardRequest(hs *handshake, p []byte, peer Peer) {
	var req protocol.Forward
	if !hs.request(protocol.TypeForward, p, &req) {
		return
	}
	if !s.cfg.Forward.forwarding() {
		hs.refuse(protocol.KindForward, "corkd does not forward ports or sockets (corkd serve --forwarding=none)")
		return
	}
	user, agentPath, perr := s.agentSession(&req, peer)
	if perr != nil {
		hs.refuse(perr.Kind, perr.Message)
		return
	}
	acct, perr := s.account(user, peer)
	if perr != nil {
		hs.refuse(perr.Kind, perr.Message)
		return
	}
	if !s.admit(hs) {
		return
	}
	defer s.sessionEnded()
	job := &forwardJob{ID: newSessionID(), Forward: req, AgentPath: agentPath, Account: *acct}
	if s.handOff(hs, job) {
		return
	}
	s.serveForwarding(job, hs.c, hs.r, hs.w, hs.refuse)
}

// forwardJob is a forwarding connection's request, resolved and admitted:
// what serves it, in corkd or in a worker, starts from it.
type forwardJob struct {
	ID        string
	Forward   protocol.Forward
	AgentPath string // for cork attach -A: the kept session's SSH_AUTH_SOCK
	Account   account.Account
}

// serveForwarding answers the Forward on c, and carries its streams until
// the connection ends. refuse tells the host why it cannot.
func (s *Server) serveForwarding(job *forwardJob, c io.ReadWriteCloser, r *protocol.Reader, w *protocol.Writer, refuse func(kind, msg string)) {
	acct := &job.Account
	log := s.log.With("forward", job.ID, "user", acct.Name)
	fc := &s.cfg.Forward
	answer := &protocol.Forwarding{MaxStreams: fc.MaxStreamsPerConn, EarlyData: job.Forward.EarlyData && fc.Window >= protocol.EarlyWindow}
	var agent *agentSocket
	if job.Forward.Agent {
		var err error
		if agent, err = makeAgentSocket(s, acct, log, job.AgentPath); err != nil {
			refuse(protocol.KindForward, err.Error())
			return
		}
		defer agent.close()
		answer.AgentSocket = agent.path
	}
	if w.WriteJSON(protocol.TypeForwarding, answer) != nil {
		return
	}
	log.Info("forwarding", "uid", acct.UID, "agent", answer.AgentSocket)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel() // a dial still waiting ends with the connection
	dialer := newUserThread(acct)
	defer dialer.stop()
	listeners := &guestListeners{srv: s, user: dialer, warn: s.limitLog(log.Warn, acct.UID), info: s.limitLog(log.Info, acct.UID)}
	defer listeners.close()
	m := streams.New(c, r, w, streams.Config{
		Window: fc.Window, MaxStreams: fc.MaxStreamsPerConn,
		Accept: func(network uint8, address string) (io.ReadWriteCloser, error) {
			return s.dialStream(ctx, dialer, network, address)
		},
		Control: listeners.control,
		Log:     listeners.info,
		Early:   answer.EarlyData,
	})
	listeners.m = m
	if agent != nil {
		go agent.serve(m)
	}
	if job.Forward.Watch {
		go watchPorts(m, acct, log)
	}
	err := m.Run()
	log.Info("forwarding ended", "err", err)
}

// limitLog returns logf logging each message of uid's forwards at most
// once a second, with how many times it happened since: a peer's streams
// and listens, refused or cut short, would otherwise fill the guest's log
// as fast as it can ask.
func (s *Server) limitLog(logf func(string, ...any), uid uint32) func(string, ...any) {
	return func(msg string, args ...any) {
		if ok, n := s.conns.warningDue(fmt.Sprintf("forwarding uid %d: %s", uid, msg)); ok {
			logf(msg, append(args, "times", n)...)
		}
	}
}

// dialStream connects to address in the guest for a stream, as the
// dialer's account, within its limit of streams; ctx ends with the
// forwarding connection.
func (s *Server) dialStream(ctx context.Context, dialer *userThread, network uint8, address string) (io.ReadWriteCloser, error) {
	release, err := s.streams.take(dialer.acct.UID, s.cfg.Forward.MaxStreamsPerUID, s.cfg.Forward.MaxStreams)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Forward.DialTimeout)
	defer cancel()
	c, err := dialAs(ctx, dialer, network, address)
	if errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("%s: no connection within %v (corkd serve's dial timeout)", address, s.cfg.Forward.DialTimeout)
	}
	if err != nil {
		release()
		return nil, err
	}
	return &heldConn{Conn: c, release: release}, nil
}

// heldConn is a connection counted against its uid's streams until it is
// closed, or, once a stream took the release (streams.Releaser), until
// the stream is off its connection: a peer that never answers the
// stream's close keeps the stream open after the connection's close.
type heldConn struct {
	net.Conn
	mu      sync.Mutex
	release func() // nil once taken or done
}

// TakeRelease hands the release to the caller: Close no longer does it.
func (h *heldConn) TakeRelease() func() {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.release
	h.release = nil
	return r
}

func (h *heldConn) Close() error {
	if release := h.TakeRelease(); release != nil {
		release()
	}
	return h.Conn.Close()
}

// RawSocket is the connection's socket, which streams.Join may write to
// directly: heldConn's Write is the connection's.
func (h *heldConn) RawSocket() (syscall.RawConn, error) {
	sc, ok := h.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.New("not a socket")
	}
	return sc.SyscallConn()
}

func (h *heldConn) CloseWrite() error {
	if cw, ok := h.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.New("cannot half close")
}

// uidStreams counts the streams open, in all and as each uid.
type uidStreams struct {
	mu    sync.Mutex
	n     map[uint32]int
	total int
}

// take counts one more stream of uid, or says why it may not open.
func (u *uidStreams) take(uid uint32, perUID, total int) (release func(), err error) {
	if _, refused := u.takeN(uid, 1, perUID, total); refused != 0 {
		return nil, refusal(refused, uid, perUID, total)
	}
	var once sync.Once
	return func() { once.Do(func() { u.giveN(uid, 1) }) }, nil
}
