// Package agent is corkd's core: it speaks the protocol on one connection at
// a time per session and runs the requested program on a PTY or on pipes.
package agent

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/corkvm/cork/guest/account"
	"github.com/corkvm/cork/protocol"
)

// Config holds the agent's limits. Zero fields take the defaults below.
type Config struct {
	Logger *slog.Logger
	// Software names the agent in its Hello, for example "corkd 0.1.0".
	Software string
	// HandshakeTimeout bounds the time from connect to a complete Exec.
	HandshakeTimeout time.Duration
	// DisconnectGrace is the time between SIGHUP and SIGKILL when the
	// connection drops under a running session.
	DisconnectGrace time.Duration
	// DrainIdle and DrainMax bound how long output is still read after
	// the program was reaped, for a background process that keeps the
	// terminal or the pipes open: reading stops after DrainIdle without
	// output, or DrainMax in all.
	DrainIdle time.Duration
	DrainMax  time.Duration
	// StdinWindow is how many stdin bytes a host may have in flight.
	StdinWindow uint32
	// MaxSessions limits concurrent sessions.
	MaxSessions int
	// MaxFrame lowers the largest frame payload accepted from a host
	// below protocol.MaxPayload.
	MaxFrame int
	// DefaultTerm is TERM for PTY sessions whose host sends none.
	DefaultTerm string
	// MaxKept limits kept sessions, running and exited; KeepBuffer is
	// the output each keeps for a host that resumes; Linger is how long a
	// kept session may run detached, or be remembered after exiting
	// detached, unless its request says otherwise (negative: forever).
	MaxKept    int
	KeepBuffer int
	Linger     time.Duration
	// ScreenScrollback is how many lines scrolled off a kept session's
	// screen it keeps, for an attach to show.
	ScreenScrollback int
	// FreeMemoryAfter is how long the agent stays without a session
	// before it returns the memory of a busy spell to the system.
	FreeMemoryAfter time.Duration
	// KeptVia, when set, serves kept sessions elsewhere: it returns a
	// connection to the agent that keeps them, to which requests about
	// kept sessions are relayed. corkd serve --stdio dies with its
	// connection, so it hands them to a long-lived corkd in the guest.
	KeptVia func() (io.ReadWriteCloser, error)
}

// Defaults for Config.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultDisconnectGrace  = 2 * time.Second
	DefaultDrainIdle        = 200 * time.Millisecond
	DefaultDrainMax         = 2 * time.Second
	DefaultFreeMemoryAfter  = 2 * time.Second
	// DefaultStdinWindow lets a host keep several 128 KiB stdin frames
	// in flight while the program's pipe drains: 1 MiB moved 15% more
	// input per second than 256 KiB (OpenSSH's session window is 2 MiB).
	// A session that does not read its input holds at most this much.
	DefaultStdinWindow      = 1 << 20
	DefaultMaxSessions      = 256
	DefaultTerm             = "xterm-256color"
	DefaultMaxKept          = 32
	DefaultKeepBuffer       = 1 << 20
	DefaultLinger           = 24 * time.Hour
	DefaultScreenScrollback = 100
	// MaxWatchers bounds the read-only clients of a kept session.
	MaxWatchers = 8
)

// Server runs sessions.
type Server struct {
	cfg    Config
	log    *slog.Logger
	self   *account.Account
	active atomic.Int64
	// resizes counts the window sizes applied to terminals since start,
	// for Stats: an operator, or a benchmark, sees how many of a burst
	// of sizes reached a program without a log line per resize.
	resizes atomic.Uint64
	wg      sync.WaitGroup
	kept    *keptSessions
	// freeMemory returns memory to the system once no session has run
	// for cfg.FreeMemoryAfter.
	freeMemory *time.Timer
}

// New returns a Server with cfg's limits.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Software == "" {
		cfg.Software = "corkd"
	}
	setDefault(&cfg.HandshakeTimeout, DefaultHandshakeTimeout)
	setDefault(&cfg.DisconnectGrace, DefaultDisconnectGrace)
	setDefault(&cfg.DrainIdle, DefaultDrainIdle)
	setDefault(&cfg.DrainMax, DefaultDrainMax)
	setDefault(&cfg.FreeMemoryAfter, DefaultFreeMemoryAfter)
	setDefault(&cfg.StdinWindow, DefaultStdinWindow)
	setDefault(&cfg.MaxSessions, DefaultMaxSessions)
	setDefault(&cfg.DefaultTerm, DefaultTerm)
	setDefault(&cfg.MaxKept, DefaultMaxKept)
	setDefault(&cfg.KeepBuffer, DefaultKeepBuffer)
	setDefault(&cfg.Linger, DefaultLinger)
	setDefault(&cfg.ScreenScrollback, DefaultScreenScrollback)
	if cfg.ScreenScrollback < 0 {
		cfg.ScreenScrollback = 0
	}
	if cfg.Linger < 0 {
		cfg.Linger = 0 // forever
	}
	self, err := account.Current()
	if err != nil {
		cfg.Logger.Warn("cannot resolve own account", "err", err)
	}
	s := &Server{cfg: cfg, log: cfg.Logger, self: self, kept: newKeptSessions(cfg.MaxKept)}
	s.freeMemory = time.AfterFunc(time.Duration(math.MaxInt64), func() {
		if s.active.Load() == 0 {
			// Twice: the pooled frame buffers survive the first
			// collection in their pool's victim cache, and only the
			// second frees them.
			debug.FreeOSMemory()
			debug.FreeOSMemory()
		}
	})
	return s
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// Serve accepts connections on l and serves each in its own goroutine
// until l is closed. Other accept errors (out of descriptors, say) are
// logged and retried with backoff, as net/http does: they must not take
// down the sessions already running.
func (s *Server) Serve(l net.Listener) {
	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed; retrying", "addr", l.Addr().String(), "err", err, "in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			// As net/http does for a handler: a bug in one session must
			// not end the others.
			defer func() {
				if r := recover(); r != nil {
					s.log.Error("session panicked", "panic", r, "stack", string(debug.Stack()))
					c.Close()
				}
			}()
			s.ServeConn(c)
		}()
	}
}

// Wait blocks until every session started by Serve has ended.
func (s *Server) Wait() { s.wg.Wait() }

// Active reports the number of sessions running now.
func (s *Server) Active() int { return int(s.active.Load()) }

// ServeConn serves one connection: the handshake, then pings and one
// request: a session (Exec), or, with protocol version 2, an attach to a
// kept session, a listing, a kill or a removal. It closes c before it
// returns; a kept session goes on without it.
func (s *Server) ServeConn(c io.ReadWriteCloser) {
	peer := peerOf(c)
	c = newThreadConn(c)
	defer c.Close()
	r := protocol.NewReader(c)
	r.SetLimit(s.cfg.MaxFrame)
	w := protocol.NewWriter(c)
	hs := &handshake{srv: s, c: c, r: r, w: w}
	t, p, ok := hs.run()
	if !ok {
		return
	}
	switch t {
	case protocol.TypeExec:
		var req protocol.Exec
		if !hs.request(t, p, &req) {
			return
		}
		if req.Keep && hs.version < 2 {
			hs.refuse(protocol.KindKeep, "kept sessions need protocol version 2; this connection speaks version 1")
			return
		}
		if req.Keep && s.cfg.KeptVia != nil {
			s.relay(hs, t, p)
			return
		}
		s.execSession(hs, &req, peer)
	case protocol.TypeAttach, protocol.TypeList, protocol.TypeKill, protocol.TypeRemove, protocol.TypePeek:
		if hs.version < 2 {
			hs.refuse(protocol.KindProtocol, fmt.Sprintf("%s needs protocol version 2; this connection speaks version 1", t))
			return
		}
		if s.cfg.KeptVia != nil {
			s.relay(hs, t, p)
			return
		}
		s.keptRequest(hs, t, p, peer)
	case protocol.TypeCopyIn, protocol.TypeCopyOut:
		if hs.version < 2 {
			hs.refuse(protocol.KindProtocol, fmt.Sprintf("%s needs protocol version 2; this connection speaks version 1", t))
			return
		}
		s.copyRequest(hs, t, p, peer)
	default:
		hs.refuse(protocol.KindProtocol, fmt.Sprintf("expected exec, attach, list, peek, kill, remove, copy-in or copy-out, got %s", t))
	}
}

// execSession starts the program req asks for and drives it from the
// connection until the program ends or the connection does.
func (s *Server) execSession(hs *handshake, req *protocol.Exec, peer Peer) {
	if req.Keep {
		if perr := s.kept.room(req.Name); perr != nil {
			hs.refuse(perr.Kind, perr.Message)
			return
		}
	}
	if !s.admit(hs) {
		return
	}
	id := newSessionID()
	log := s.log.With("session", id)
	ss, err := s.start(id, req, peer, hs.w, log)
	if err != nil {
		s.sessionEnded()
		var perr *protocol.Error
		if errors.As(err, &perr) {
			hs.refuse(perr.Kind, perr.Message)
		} // else errExitReported: the program could not be executed
		return
	}
	cl := ss.newClient(hs.c, hs.w)
	ss.attach(cl)
	if req.Keep {
		if perr := s.kept.add(ss); perr != nil {
			// Another request took the name between the check and now.
			ss.begin()
			ss.detach(cl)
			cl.last(protocol.TypeError, perr)
			ss.hangup()
			return
		}
	}
	ss.begin()
	ss.serve(cl, hs.r)
}

// admit counts a session, or a copy, in; past MaxSessions it refuses the
// request instead and reports false. A session admitted ends with
// sessionEnded.
func (s *Server) admit(hs *handshake) bool {
	if s.active.Add(1) > int64(s.cfg.MaxSessions) {
		s.sessionEnded()
		hs.refuse(protocol.KindBusy, fmt.Sprintf("corkd is at its limit of %d sessions", s.cfg.MaxSessions))
		return false
	}
	return true
}

// sessionEnded counts a session out. The last one gone, the buffers of a
// busy spell go back to the VM after FreeMemoryAfter rather than minutes
// later, when the Go runtime would. Not at once: a host that runs one
// short command after another ends a session just before starting the
// next, and a full collection and scavenge each time took more CPU than
// the session itself (perf: over a third of corkd's time across a run of
// `cork exec -- true`).
func (s *Server) sessionEnded() {
	if s.active.Add(-1) == 0 {
		s.freeMemory.Reset(s.cfg.FreeMemoryAfter)
	}
}

// forgotten notes that a kept session's memory (its screen and output)
// is let go: once no session runs, it goes back to the system as a busy
// spell's does. Without it, what the kept sessions held stayed in corkd's
// RSS after they were removed.
func (s *Server) forgotten() {
	if s.active.Load() == 0 {
		s.freeMemory.Reset(s.cfg.FreeMemoryAfter)
	}
}

func newSessionID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
