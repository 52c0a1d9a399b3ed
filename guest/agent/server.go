// Package agent is corkd's core: it speaks the protocol on one connection at
// a time per session and runs the requested program on a PTY or on pipes.
package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os/exec"
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
	// HandshakeTimeout bounds the time from connect to a connection's
	// admission to a session, or to the answer to its request; pings do
	// not extend it.
	HandshakeTimeout time.Duration
	// MaxPending limits the connections not yet admitted to a session, in
	// total; MaxPendingPerPeer, those of one peer (a uid on a unix socket,
	// a CID on vsock). A connection past either is told so and closed.
	MaxPending        int
	MaxPendingPerPeer int
	// MaxPendingBytes bounds the payloads of the frames that connections
	// not yet admitted are reading, in total; MaxPendingBytesPerPeer,
	// those of one peer. A frame's announced length is charged before
	// its payload is allocated; a frame past either budget is refused.
	MaxPendingBytes        int
	MaxPendingBytesPerPeer int
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
	// MaxSessions limits concurrent sessions and copies. It bounds the
	// agent's OS threads too: a session holds two (its frames' reader and
	// the wait for its program), a copy one, and nothing else a peer can
	// make the agent hold does, so there are at most 2 x MaxSessions
	// threads, plus about GOMAXPROCS and a few of the Go runtime's own.
	MaxSessions int
	// MaxSessionsPerUID limits the concurrent sessions and copies of one
	// uid that runs sessions only as itself (listen's AllowUIDs), so that
	// it cannot take every session from root and the other uids.
	MaxSessionsPerUID int
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
	// MaxKeptPerUID limits the kept sessions of each uid that may run
	// sessions only as itself (DefaultMaxKeptPerUID when zero).
	MaxKeptPerUID int
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
	// Forward holds what corkd forwards and its limits (forward.go).
	Forward ForwardConfig
	// ForwardWorker, when set, returns the command of a forwarding
	// worker: corkd's forward-worker, which serves a forwarding
	// connection on a socket in a process of its own (forwardworker.go).
	// The agent adds the connection, the job and the lease socket as its
	// fds 3 to 5, before any files the command brings, and its stdin,
	// environment, directory and process group.
	ForwardWorker func() *exec.Cmd
}

// Defaults for Config.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultDisconnectGrace  = 2 * time.Second
	DefaultDrainIdle        = 200 * time.Millisecond
	DefaultDrainMax         = 2 * time.Second
	DefaultFreeMemoryAfter  = 2 * time.Second
	// DefaultStdinWindow lets a host keep several 128 KiB stdin frames
	// in flight while the program's pipe drains, so that input does not
	// wait for each acknowledgement (OpenSSH's session window is 2 MiB).
	// A session that does not read its input holds at most this much.
	DefaultStdinWindow    = 1 << 20
	DefaultMaxSessions    = 256
	DefaultMaxPending     = 512
	DefaultMaxPendingPeer = 64
	// A request may be as large as a frame (an Exec with a large
	// environment), so that one peer may read four of the largest at
	// once, and all peers together sixteen.
	DefaultMaxPendingBytes     = 16 << 20
	DefaultMaxPendingBytesPeer = 4 << 20
	DefaultMaxSessionsUID      = 32
	DefaultTerm                = "xterm-256color"
	DefaultMaxKept             = 32
	DefaultKeepBuffer          = 1 << 20
	DefaultLinger              = 24 * time.Hour
	DefaultScreenScrollback    = 100
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
	conns   *conns
	// sessions are the sessions running, for Shutdown to hang up.
	sessMu   sync.Mutex
	sessions map[*session]bool
	closing  bool
	// freeMemory returns memory to the system once no session has run
	// for cfg.FreeMemoryAfter.
	freeMemory *time.Timer
	// freeForgotten returns memory to the system cfg.FreeMemoryAfter
	// after a kept session is forgotten, sessions running or not.
	freeForgotten *time.Timer
	// streamsPerUID counts forwarded streams by the uid they run as,
	// those of corkd's forwarding workers included (forwardleases.go);
	// streams takes them: from streamsPerUID, or, in a worker, from
	// corkd.
	streamsPerUID uidStreams
	streams       streamCounter
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
	setDefault(&cfg.MaxPending, DefaultMaxPending)
	setDefault(&cfg.MaxPendingPerPeer, DefaultMaxPendingPeer)
	setDefault(&cfg.MaxPendingBytes, DefaultMaxPendingBytes)
	setDefault(&cfg.MaxPendingBytesPerPeer, DefaultMaxPendingBytesPeer)
	setDefault(&cfg.MaxSessionsPerUID, DefaultMaxSessionsUID)
	setDefault(&cfg.DefaultTerm, DefaultTerm)
	setDefault(&cfg.MaxKept, DefaultMaxKept)
	setDefault(&cfg.KeepBuffer, DefaultKeepBuffer)
	setDefault(&cfg.Linger, DefaultLinger)
	setDefault(&cfg.ScreenScrollback, DefaultScreenScrollback)
	cfg.Forward.setDefaults()
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
	s := &Server{cfg: cfg, log: cfg.Logger, self: self, kept: newKeptSessions(cfg.MaxKept, cfg.MaxKeptPerUID),
		conns: newConns(&cfg), sessions: map[*session]bool{}}
	s.streams = &s.streamsPerUID
	s.freeMemory = time.AfterFunc(time.Duration(math.MaxInt64), func() {
		if s.active.Load() == 0 {
			freeOSMemory()
		}
	})
	s.freeForgotten = time.AfterFunc(time.Duration(math.MaxInt64), freeOSMemory)
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

// Wait blocks until every connection accepted by Serve has been served.
func (s *Server) Wait() { s.wg.Wait() }

// Shutdown ends the agent's work, for corkd to exit: connections not yet
// admitted are closed and new ones refused; every session, kept ones
// included, is hung up (SIGHUP, then SIGKILL after DisconnectGrace) and
// its client and watchers get its Exit, as when a connection drops; then
// the connections left (copies) are closed. It returns once the sessions
// have ended and, within grace more, the connections that Serve accepted
// have been served. The listeners are the caller's to close first.
func (s *Server) Shutdown(grace time.Duration) {
	// A session ends within the grace and the drain, unless its output
	// waits on a client that does not read: closing the connections then
	// ends that wait.
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DisconnectGrace+s.cfg.DrainMax+grace)
	defer cancel()
	s.conns.shutdown()
	// Sessions admitted before are tracked once they have started: a
	// session that started after running was listed would escape the
	// hang-up, and corkd would exit and leave its program running.
	waitOrDone(&s.conns.starting, ctx.Done())
	s.sessMu.Lock()
	s.closing = true
	var running []*session
	for ss := range s.sessions {
		running = append(running, ss)
	}
	s.sessMu.Unlock()
	s.log.Info("shutting down: hanging up every session", "sessions", len(running))
	for _, ss := range running {
		go ss.hangup()
	}
wait:
	for _, ss := range running {
		select {
		case <-ss.done:
		case <-ctx.Done():
			break wait
		}
		// A kept session's client gets its Exit from its own feed,
		// after the session is done: it must have it before the
		// connection is closed.
		select {
		case <-ss.exitGiven():
		case <-ctx.Done():
			break wait
		}
	}
	s.conns.closeAdmitted()
	served := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(served)
	}()
	select {
	case <-served:
	case <-time.After(grace):
		s.log.Warn("connections still being served at shutdown", "after", grace)
	}
}

// waitOrDone waits for wg, or until stop is closed, whichever is first.
func waitOrDone(wg *sync.WaitGroup, stop <-chan struct{}) {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-stop:
	}
}

// track adds a started session to those Shutdown hangs up, until it ends,
// and calls end then. Shutdown waits for a session admitted before it to
// be tracked; one that took longer than Shutdown's whole wait to start is
// hung up here.
func (s *Server) track(ss *session, end func()) {
	s.sessMu.Lock()
	late := s.closing
	if !late {
		s.sessions[ss] = true
	}
	s.sessMu.Unlock()
	if late {
		go ss.hangup()
	}
	go func() {
		<-ss.done
		end()
		s.sessMu.Lock()
		delete(s.sessions, ss)
		s.sessMu.Unlock()
	}()
}

// refuseAtOnce tells a connection refused before its handshake why, when
// the write can be bounded, and closes it. The refusal is the first frame
// the peer reads: before its hello is answered, as a version mismatch is.
func refuseAtOnce(c io.ReadWriteCloser, w *protocol.Writer, err error) {
	if d, ok := c.(interface{ SetWriteDeadline(time.Time) error }); ok && d.SetWriteDeadline(time.Now().Add(refuseWrite)) == nil {
		w.WriteJSON(protocol.TypeError, &protocol.Error{Kind: protocol.KindBusy, Message: err.Error()})
	}
	c.Close()
}

// refuseWrite bounds the write of a refusal. A refusal fits in the socket's
// buffer of a new connection, so the write does not wait in practice.
const refuseWrite = time.Second

// warnPeer logs a warning about a connection of peer's, at most once a
// second per peer (conns.warningDue); the line counts the warnings it
// stands for, this one included.
func (s *Server) warnPeer(peer, msg string, args ...any) {
	if ok, n := s.conns.warningDue(peer); ok {
		s.log.Warn(msg, append([]any{"peer", peer}, append(args, "times", n)...)...)
	}
}

// Active reports the number of sessions running now.
func (s *Server) Active() int { return int(s.active.Load()) }

// ServeConn serves one connection: the handshake, then pings and one
// request: a session (Exec), or, with protocol version 2, an attach to a
// kept session, a listing, a kill or a removal. It closes c before it
// returns; a kept session goes on without it.
func (s *Server) ServeConn(c io.ReadWriteCloser) {
	peer, name := peerOf(c), peerName(c)
	// Until a session's reader takes it over, the connection is read
	// through Go's poller: a connection not admitted holds no thread.
	c = newThreadConn(c)
	defer c.Close()
	w := protocol.NewWriter(c)
	entry, err := s.conns.add(c, name, !peer.AsAny)
	if err != nil {
		s.warnPeer(name, "connection refused", "err", err)
		refuseAtOnce(c, w, err)
		return
	}
	defer s.conns.remove(entry)
	hs := s.startHandshake(c, w, entry)
	defer hs.deadline.Stop()
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
			if hs.admitted() {
				s.relay(hs, t, p)
			}
			return
		}
		s.execSession(hs, &req, peer)
	case protocol.TypeAttach, protocol.TypeList, protocol.TypeKill, protocol.TypeRemove, protocol.TypePeek:
		if !hs.speaks2(t) {
			return
		}
		if s.cfg.KeptVia != nil {
			if hs.admitted() {
				s.relay(hs, t, p)
			}
			return
		}
		// An attach becomes the client of a session (one per kept
		// session, the watchers bounded per session); the other requests
		// are answered within the deadline.
		if t == protocol.TypeAttach && !hs.admitted() {
			return
		}
		s.keptRequest(hs, t, p, peer)
	case protocol.TypeCopyIn, protocol.TypeCopyOut:
		if hs.speaks2(t) {
			s.copyRequest(hs, t, p, peer)
		}
	case protocol.TypeForward:
		if hs.speaks2(t) {
			s.forwardRequest(hs, p, peer)
		}
	default:
		hs.refuse(protocol.KindProtocol, fmt.Sprintf("expected exec, attach, list, peek, kill, remove, copy-in, copy-out or forward, got %s", t))
	}
}

// execSession starts the program req asks for and drives it from the
// connection until the program ends or the connection does.
func (s *Server) execSession(hs *handshake, req *protocol.Exec, peer Peer) {
	if req.Keep {
		s.execKept(hs, req, peer)
		return
	}
	if ss, cl := s.startSession(hs, req, peer, nil); ss != nil {
		ss.runClient(cl, hs.r)
	}
}

// testHookTracking, when set, runs as a started session is about to be
// tracked, with its program's pid: a test holds it there while Shutdown
// begins.
var testHookTracking atomic.Pointer[func(pid int)]

// startSession admits the request, starts its program, puts a kept
// session in the table on its reservation r, tells the client Started and
// tracks the session for Shutdown. It returns a nil session when the
// request was refused.
func (s *Server) startSession(hs *handshake, req *protocol.Exec, peer Peer, r *reservation) (*session, *client) {
	started, ok := s.admitToStart(hs)
	if !ok {
		return nil, nil
	}
	defer started(nil) // when the program did not start
	id := newSessionID()
	w := hs.w
	if req.Keep {
		// What startProgram writes (a failed exec's report) has the
		// deadline of every write to a kept session's client: a peer
		// that does not read it does not hold the reservation.
		w = protocol.NewWriter(stallWriter{hs.c})
	}
	ss, st, err := s.startProgram(id, req, peer, w, s.log.With("session", id))
	if err != nil {
		s.sessionEnded()
		var perr *protocol.Error
		if errors.As(err, &perr) {
			hs.refuse(perr.Kind, perr.Message)
		} // else errExitReported: the program could not be executed
		return nil, nil
	}
	cl := ss.newClient(hs.c, hs.w)
	cl.terminal = req.Terminal
	ss.attach(cl)
	if r != nil {
		s.kept.add(ss, r)
	}
	// Started before any output: a plain session's pumps write to its
	// client themselves.
	ss.greet(cl, st)
	ss.pumpAndReap()
	started(ss)
	return ss, cl
}

// admitToStart admits a request that starts a session and counts the
// session in (countIn). Until started is called, with the session once
// its program runs or with nil when none started, Shutdown waits for it: a
// session that began after Shutdown listed the running ones would escape
// the hang-up. Calls after the first do nothing.
func (s *Server) admitToStart(hs *handshake) (started func(*session), ok bool) {
	if !hs.admittedToStart() {
		return nil, false
	}
	var once sync.Once
	started = func(ss *session) {
		once.Do(func() {
			defer s.conns.started()
			if ss == nil {
				return
			}
			if hook := testHookTracking.Load(); hook != nil {
				(*hook)(ss.cmd.Process.Pid)
			}
			// The count of the session's uid ends with the session,
			// after its program is gone, whatever becomes of the
			// connection.
			s.track(ss, s.conns.giveSession(hs.entry))
		})
	}
	if !s.countIn(hs) {
		started(nil)
		return nil, false
	}
	return started, true
}

// admit admits a copy, or another request that is no session, and counts
// it in as a session (countIn).
func (s *Server) admit(hs *handshake) bool { return hs.admitted() && s.countIn(hs) }

// countIn counts a session, or a copy, in; past MaxSessions, or its
// confined uid's limit, it refuses the request instead and reports false.
// A session counted in ends with sessionEnded.
func (s *Server) countIn(hs *handshake) bool {
	if err := s.conns.takeSession(hs.entry); err != nil {
		hs.refuse(protocol.KindBusy, err.Error())
		return false
	}
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
// the session itself.
func (s *Server) sessionEnded() {
	if s.active.Add(-1) == 0 {
		s.freeMemory.Reset(s.cfg.FreeMemoryAfter)
	}
}

// forgotten notes that a kept session's memory (its screen and output)
// is let go: it goes back to the system a little later, whatever else
// runs. Without it, what the kept sessions held stayed in corkd's RSS
// after they were removed, for as long as any session ran. Forgetting is
// rare (rm, a linger's end, an exit seen), so the full collection it
// costs is not paid per command as a session's end would be.
func (s *Server) forgotten() {
	s.freeForgotten.Reset(s.cfg.FreeMemoryAfter)
}

// freeOSMemory returns the heap's free memory to the system. Twice: the
// pooled frame buffers survive the first collection in their pool's
// victim cache, and only the second frees them.
func freeOSMemory() {
	debug.FreeOSMemory()
	debug.FreeOSMemory()
}

func newSessionID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
