package agent

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"

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

func (c *ForwardConfig) setDefaults() {
	setDefault(&c.Mode, ForwardLocal)
	setDefault(&c.MaxStreamsPerConn, DefaultMaxStreamsPerConn)
	setDefault(&c.MaxStreamsPerUID, DefaultMaxStreamsPerUID)
	setDefault(&c.MaxStreams, DefaultMaxStreams)
	setDefault(&c.Window, DefaultStreamWindow)
	setDefault(&c.DialTimeout, DefaultDialTimeout)
}

// forwarding reports whether the agent serves Forward at all.
func (c *ForwardConfig) forwarding() bool { return c.Mode != ForwardNone }

// forwardRequest serves a Forward: the connection carries streams the host
// opens, each connected in the guest as the request's user. It counts as a
// session against the agent's limits.
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
	log := s.log.With("forward", newSessionID(), "user", acct.Name)
	fc := &s.cfg.Forward
	answer := &protocol.Forwarding{MaxStreams: fc.MaxStreamsPerConn}
	var agent *agentSocket
	if req.Agent {
		var err error
		if agent, err = makeAgentSocket(s, acct, log, agentPath); err != nil {
			hs.refuse(protocol.KindForward, err.Error())
			return
		}
		defer agent.close()
		answer.AgentSocket = agent.path
	}
	if hs.w.WriteJSON(protocol.TypeForwarding, answer) != nil {
		return
	}
	log.Info("forwarding", "uid", acct.UID, "agent", answer.AgentSocket)
	listeners := &guestListeners{srv: s, acct: acct, log: log}
	defer listeners.close()
	m := streams.New(hs.c, hs.r, hs.w, streams.Config{
		Window: fc.Window, MaxStreams: fc.MaxStreamsPerConn,
		Accept: func(network uint8, address string) (io.ReadWriteCloser, error) {
			return s.dialStream(acct, network, address)
		},
		Control: listeners.control,
		Log:     log.Info,
	})
	listeners.m = m
	if agent != nil {
		go agent.serve(m)
	}
	if req.Watch {
		go watchPorts(m, acct, log)
	}
	err := m.Run()
	log.Info("forwarding ended", "err", err)
}

// dialStream connects to address in the guest for a stream, as acct, within
// acct's limit of streams.
func (s *Server) dialStream(acct *account.Account, network uint8, address string) (io.ReadWriteCloser, error) {
	release, err := s.streamsPerUID.take(acct.UID, s.cfg.Forward.MaxStreamsPerUID, s.cfg.Forward.MaxStreams)
	if err != nil {
		return nil, err
	}
	var c net.Conn
	switch network {
	case protocol.NetUnix:
		c, err = dialUnixAs(address, acct)
	case protocol.NetTCP:
		c, err = net.DialTimeout("tcp", address, s.cfg.Forward.DialTimeout)
	default:
		err = fmt.Errorf("corkd connects only to TCP addresses and unix sockets, not network %d", network)
	}
	if err != nil {
		release()
		return nil, err
	}
	return &heldConn{Conn: c, release: sync.OnceFunc(release)}, nil
}

// heldConn is a connection counted against its uid's streams until closed.
type heldConn struct {
	net.Conn
	release func()
}

func (h *heldConn) Close() error {
	h.release()
	return h.Conn.Close()
}

func (h *heldConn) CloseWrite() error {
	if cw, ok := h.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.New("cannot half close")
}

// dialUnixAs connects to the unix socket at path with acct's permissions:
// connect(2) needs write permission on the socket and search permission on
// the directories above it, which the kernel checks against the thread's
// filesystem uid. The thread that takes acct's identity is never unlocked,
// so it ends with its goroutine and runs nothing else (see copyRequest).
func dialUnixAs(path string, acct *account.Account) (net.Conn, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("unix socket %q: the path must be absolute", path)
	}
	type result struct {
		c   net.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		if err := actAs(acct); err != nil {
			done <- result{err: err}
			return
		}
		c, err := connectUnix(path)
		done <- result{c, err}
	}()
	r := <-done
	return r.c, r.err
}

// connectUnix connects without waiting: a listener whose backlog is full
// is an error at once (EAGAIN), not a thread held until it accepts.
func connectUnix(path string) (net.Conn, error) {
	opErr := func(call string, err error) error {
		return &net.OpError{Op: "dial", Net: "unix", Addr: &net.UnixAddr{Name: path, Net: "unix"}, Err: os.NewSyscallError(call, err)}
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, opErr("socket", err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		if err == unix.EAGAIN {
			return nil, opErr("connect", errors.New("the listener's backlog is full"))
		}
		return nil, opErr("connect", err)
	}
	return net.FileConn(f)
}

// uidStreams counts the streams open, in all and as each uid.
type uidStreams struct {
	mu    sync.Mutex
	n     map[uint32]int
	total int
}

// take counts one more stream of uid, or says why it may not open.
func (u *uidStreams) take(uid uint32, perUID, total int) (release func(), err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.n == nil {
		u.n = map[uint32]int{}
	}
	if u.total >= total {
		return nil, fmt.Errorf("corkd has %d streams open, its limit (corkd serve --max-streams)", u.total)
	}
	if u.n[uid] >= perUID {
		return nil, fmt.Errorf("uid %d already has %d streams open, the most corkd keeps for one uid (corkd serve --max-streams-per-uid)", uid, perUID)
	}
	u.n[uid]++
	u.total++
	return func() {
		u.mu.Lock()
		defer u.mu.Unlock()
		u.total--
		if u.n[uid]--; u.n[uid] == 0 {
			delete(u.n, uid)
		}
	}, nil
}
