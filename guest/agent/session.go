package agent

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"weak"

	"github.com/corkvm/cork/protocol"
)

// DefaultPath is PATH for a session whose environment has none.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// session is one running program, and the client, if any, that drives it.
// A plain session has one client for its whole life and ends with it; a
// kept session outlives its clients: output goes on being read into a ring
// while none is attached, and a later client attaches to it.
type session struct {
	srv   *Server
	log   *slog.Logger
	id    string
	name  string
	argv0 string
	user  string
	owner Peer
	// ownerName names the uid whose names the session's takes
	// (ownerUID), for ls and OWNER/NAME.
	ownerName string
	started   time.Time
	keep      bool
	linger    time.Duration // kept: hang up after this long detached; 0: never

	cmd    *exec.Cmd
	master *os.File       // the PTY master; nil for a pipe session
	stdin  io.WriteCloser // the program's input: the master, a pipe, or nil
	input  *inputWriter   // a kept session's: writes stdin for its clients
	wanted bool           // the host sends stdin
	outs   []*output

	// outMu orders output: the ring, the count and the client change
	// together, so that a client attaching mid-stream gets every byte
	// once. A plain session's pump holds it while it writes a frame to
	// its one client; a kept session's is held only for memory
	// operations, and each client's feed writes without it.
	outMu    sync.Mutex
	client   *client // nil while detached
	ring     *ring   // kept sessions: the last output
	sent     uint64  // output bytes so far
	watchers map[*watcher]bool
	// Copies read without outMu: by the resize path, which never waits
	// behind output, and by the screen's answers to queries.
	sentNow    atomic.Uint64
	attached   atomic.Bool
	watched    atomic.Int32
	screen     *keptScreen // kept sessions: the screen, for attach, watchers and peek
	exited     bool        // the program has exited and its output was read
	detachedAt time.Time
	exitClient *client // the client attached when the program exited
	detachGen  int     // counts detaches, so that a stale linger timer does nothing
	// holder is the latest client's hold (Attach.Holder), random and new
	// on every join so that no other client can guess it; heldBefore is
	// the hold its resume gave, which the same client, should it never
	// have heard back, resumes with again, in a later attempt than
	// heldAttempt. A takeover clears them.
	holder      uint64
	heldBefore  uint64
	heldAttempt uint64
	// The host terminal of the last client that left, and the output
	// written when it left: that terminal holds the session's history up
	// to there (an attach from it leaves the scrollback out).
	leftTerminal string
	leftAt       uint64

	// sizeMu orders the terminal's sizes; never held with outMu, so that a
	// resize never waits behind output.
	sizeMu  sync.Mutex
	size    protocol.WindowSize
	sizeGen uint64

	reaped chan struct{} // closed when the program has been waited for
	done   chan struct{} // closed when, in addition, its output is drained
	exit   protocol.Exit
}

// client is one connection driving a session.
type client struct {
	conn io.ReadWriteCloser
	w    *protocol.Writer
	in   *inputQueue
	gone chan struct{} // closed when the client no longer drives the session
	once sync.Once

	lastMu sync.Mutex
	ended  bool // the client was sent its last frame

	terminal string // the host terminal it shows the session on, if it said
	// takenOver is set when another client takes the session over: from
	// then on its frames drive nothing, before it hears so.
	takenOver atomic.Bool
	// A kept session's client is a cursor into the session's output,
	// which its feed copies to the connection; outMu guards these.
	next uint64        // the number of the next output byte it gets
	end  *ending       // set when its part ends: after its output, or at once
	wake chan struct{} // output came, or its end did
}

// ending is the last frame a kept session's client gets.
type ending struct {
	t      protocol.Type
	v      any
	atOnce bool // without the output it has yet to get: it was taken over
}

func (ss *session) newClient(conn io.ReadWriteCloser, w *protocol.Writer) *client {
	if ss.keep {
		// Every write to a kept session's client has a deadline: one
		// that stops reading is detached, never waited for.
		w = protocol.NewWriter(stallWriter{conn})
	}
	cl := &client{conn: conn, w: w, gone: make(chan struct{}), wake: make(chan struct{}, 1),
		in: newInputQueue(int(ss.srv.cfg.StdinWindow), ss.stdin, ss.wanted, !ss.keep)}
	cl.in.via = ss.input
	return cl
}

// nudge tells the client's feed that there is more for it; it never waits.
func (cl *client) nudge() {
	select {
	case cl.wake <- struct{}{}:
	default:
	}
}

// leave ends the client's part: its frame loop returns.
func (cl *client) leave() {
	cl.once.Do(func() {
		cl.in.close()
		close(cl.gone)
	})
}

// exitGiven is closed, once the session has ended, when the client
// attached at its exit, if any, has left: after its Exit, which a kept
// session's client gets from its own feed.
func (ss *session) exitGiven() <-chan struct{} {
	ss.outMu.Lock()
	defer ss.outMu.Unlock()
	if ss.exitClient == nil {
		return closedChan
	}
	return ss.exitClient.gone
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// errHadLast is last's answer for a client that was sent its last frame
// before.
var errHadLast = errors.New("the client was sent its last frame before")

// last writes the last frame the client gets, once, and reports whether
// the write succeeded.
func (cl *client) last(t protocol.Type, v any) error {
	cl.lastMu.Lock()
	defer cl.lastMu.Unlock()
	if cl.ended {
		return errHadLast
	}
	cl.ended = true
	if s, ok := cl.conn.(InputStopper); ok {
		s.StopInput()
	}
	return cl.w.WriteJSON(t, v)
}

// hadLast reports whether the client was sent its last frame: its input
// may have been stopped for it (InputStopper), which is no lost
// connection.
func (cl *client) hadLast() bool {
	cl.lastMu.Lock()
	defer cl.lastMu.Unlock()
	return cl.ended
}

// errExitReported is startProgram's answer for a program that was not found or
// not executable: that is no refusal but the session's outcome, reported
// to the host as output and Exit, as a shell reports it.
var errExitReported = errors.New("the program could not be executed; its exit was reported")

// startProgram resolves the request into a session and starts its
// program, and returns the Started its client is to be told (greet). Its
// error is a *protocol.Error to refuse the request with, or
// errExitReported.
func (s *Server) startProgram(id string, req *protocol.Exec, peer Peer, w *protocol.Writer, log *slog.Logger) (*session, *protocol.Started, error) {
	acct, perr := s.account(req.User, peer)
	if perr != nil {
		return nil, nil, perr
	}
	dir, perr := workdir(req.Dir, acct)
	if perr != nil {
		return nil, nil, perr
	}
	env := s.environ(req, acct, dir)
	path, fail := lookPath(req.Argv[0], lookupEnv(env, "PATH"), dir, acct)
	if fail != nil {
		s.reportExecFailure(w, req, fail)
		return nil, nil, errExitReported
	}

	cmd := &exec.Cmd{Path: path, Args: req.Argv, Env: env, Dir: dir,
		SysProcAttr: &syscall.SysProcAttr{Setsid: true, Credential: programCredential(acct)}}
	ss := &session{srv: s, log: log, id: id, name: req.Name, argv0: req.Argv[0], user: acct.Name, watchers: map[*watcher]bool{},
		owner: peer, started: time.Now(), keep: req.Keep, cmd: cmd, wanted: req.Stdin,
		reaped: make(chan struct{}), done: make(chan struct{})}
	if req.Keep {
		ss.ring = newRing(s.cfg.KeepBuffer)
		ss.ownerName = ownerName(ownerUID(peer))
		ss.linger = keptLinger(req.LingerSeconds, s.cfg.Linger)
	}
	var stdin io.WriteCloser
	var err error
	if req.TTY {
		stdin, err = ss.startPTY(req, acct)
	} else {
		stdin, err = ss.startPipes(req)
	}
	if err != nil {
		if ss.screen != nil {
			ss.screen.close()
		}
		if f := startFailure(path, err); f != nil {
			s.reportExecFailure(w, req, f)
			return nil, nil, errExitReported
		}
		return nil, nil, &protocol.Error{Kind: protocol.KindStart, Message: fmt.Sprintf("starting %q: %v", req.Argv[0], err)}
	}
	ss.stdin = stdin
	if req.Keep && stdin != nil {
		ss.input = newInputWriter(stdin, ss.done)
	}
	log.Info("started", "argv0", req.Argv[0], "pid", cmd.Process.Pid, "uid", acct.UID, "tty", req.TTY, "kept", req.Keep)
	st := &protocol.Started{Session: id, PID: cmd.Process.Pid, StdinWindow: s.cfg.StdinWindow, Kept: req.Keep, Name: req.Name}
	if req.Keep {
		ss.holder = newHolder() // the first attach's, which this client's is
		st.Holder = ss.holder
	}
	return ss, st, nil
}

// greet tells cl, the session's first client, that the session started. A
// kept session's client is told once the session is in the table, so that
// the id and name it reads there find the session at once; its feed, the
// one writer to its connection, starts only after, so that nothing reaches
// it before Started, not even the news that a client that found the
// session meanwhile took it over.
func (ss *session) greet(cl *client, st *protocol.Started) {
	err := cl.w.WriteJSON(protocol.TypeStarted, st)
	switch {
	case !ss.keep:
		if err != nil {
			ss.log.Warn("host gone before the session started", "err", err)
		}
	case err != nil:
		ss.log.Info("client stopped reading before Started; detaching it", "err", err)
		ss.cutOff(cl)
	default:
		go ss.feed(cl)
	}
}

// keptLinger is a kept session's linger: what the request asks for
// (seconds; negative: forever; zero: corkd's), but never more than corkd's
// own, which a client cannot exceed (zero: forever).
func keptLinger(asked int64, most time.Duration) time.Duration {
	want := most
	switch {
	case asked < 0:
		want = 0
	case asked > 0:
		want = time.Duration(min(asked, math.MaxInt64/int64(time.Second))) * time.Second
	}
	if most > 0 && (want == 0 || want > most) {
		return most
	}
	return want
}

// startPipes starts the program with its stdin, stdout and stderr on pipes.
func (ss *session) startPipes(req *protocol.Exec) (io.WriteCloser, error) {
	var closeAfterStart, closeOnError []*os.File
	defer func() {
		for _, f := range closeAfterStart {
			f.Close()
		}
	}()
	fail := func(err error) (io.WriteCloser, error) {
		for _, f := range closeOnError {
			f.Close()
		}
		return nil, err
	}
	var stdin *os.File
	if req.Stdin {
		r, w, err := os.Pipe()
		if err != nil {
			return fail(err)
		}
		ss.cmd.Stdin, stdin = r, w
		closeAfterStart, closeOnError = append(closeAfterStart, r), append(closeOnError, w)
	} else {
		null, err := os.Open(os.DevNull)
		if err != nil {
			return fail(err)
		}
		ss.cmd.Stdin = null
		closeAfterStart = append(closeAfterStart, null)
	}
	for _, t := range []protocol.Type{protocol.TypeStdout, protocol.TypeStderr} {
		r, w, err := os.Pipe()
		if err != nil {
			return fail(err)
		}
		if t == protocol.TypeStdout {
			ss.cmd.Stdout = w
		} else {
			ss.cmd.Stderr = w
		}
		closeAfterStart, closeOnError = append(closeAfterStart, w), append(closeOnError, r)
		ss.outs = append(ss.outs, &output{f: r, t: t})
	}
	if err := ss.cmd.Start(); err != nil {
		return fail(err)
	}
	if stdin == nil {
		return nil, nil
	}
	return stdin, nil
}

// InputStopper is implemented by a connection that successive sessions
// share, a serial port: the host may start the next session as soon as it
// reads this one's last frame, so input must stop reaching this session
// before that frame goes out, or its reader could take the next hello.
type InputStopper interface {
	StopInput()
}

// pumpAndReap starts reading the program's output (its pumps) and waiting
// for its end (the reaper), whoever is attached; finish runs when both are
// done.
func (ss *session) pumpAndReap() {
	if ss.screen != nil {
		go ss.feedScreen()
	}
	var pumps sync.WaitGroup
	for _, o := range ss.outs {
		pumps.Add(1)
		go func() {
			defer pumps.Done()
			o.pump(ss.deliver)
		}()
	}
	go func() {
		err := ss.cmd.Wait()
		var ws syscall.WaitStatus
		if st := ss.cmd.ProcessState; st != nil {
			ws = st.Sys().(syscall.WaitStatus)
		} else {
			ss.log.Error("wait failed", "err", err)
			ws = syscall.WaitStatus(255 << 8)
		}
		ss.exit = exitOf(ws)
		close(ss.reaped)
		deadline := time.Now().Add(ss.srv.cfg.DrainMax)
		for _, o := range ss.outs {
			o.startDrain(ss.srv.cfg.DrainIdle, deadline)
		}
		pumps.Wait()
		ss.finish()
	}()
}

// deliver takes one frame of output: into the ring of a kept session, and
// to the attached client, if any.
func (ss *session) deliver(frame []byte) {
	ss.outMu.Lock()
	defer ss.outMu.Unlock()
	if ss.ring != nil {
		ss.ring.write(frame[protocol.HeaderSize:])
	}
	ss.sent += uint64(len(frame) - protocol.HeaderSize)
	if ss.screen != nil {
		ss.sentNow.Store(ss.sent)
		ss.screen.nudge()
	}
	cl := ss.client
	if cl == nil {
		return
	}
	if ss.keep {
		// The client's feed copies the output from the ring: the program
		// never waits on a client (EternalTerminal#731 froze Claude Code
		// on writes that blocked).
		cl.nudge()
		return
	}
	if err := cl.w.WriteFramed(frame); err != nil {
		ss.dropLocked(cl)
		go func() {
			cl.conn.Close()
			cl.leave()
		}()
	}
}

// clientStall is how long a write to a kept session's client may wait on
// a client that does not read before the client is detached: 10 s
// (tests shorten it).
var clientStall atomic.Int64

func init() { clientStall.Store(int64(10 * time.Second)) }

// stallWriter gives each write to a client its own deadline, clientStall
// from its start, so that no write waits longer on a client that stopped
// reading, and an old deadline never fails a later write.
type stallWriter struct{ conn io.ReadWriteCloser }

func (s stallWriter) Write(p []byte) (int, error) {
	if d, ok := s.conn.(interface{ SetWriteDeadline(time.Time) error }); ok {
		d.SetWriteDeadline(time.Now().Add(time.Duration(clientStall.Load())))
	}
	return s.conn.Write(p)
}

// finish ends the session once the program has exited and its output is
// drained: the attached client gets Exit; a kept session with no client
// keeps its status and output for its linger.
func (ss *session) finish() {
	if ss.screen != nil {
		ss.catchUpScreen() // before the lock, which leaves little to do under it
	}
	ss.outMu.Lock()
	ss.exited = true
	cl := ss.client
	ss.client, ss.exitClient = nil, cl
	ss.attached.Store(false)
	if cl == nil && ss.detachedAt.IsZero() {
		ss.detachedAt = time.Now()
	}
	watchers := ss.watchers
	ss.watchers = nil
	ss.watched.Store(0)
	if ss.screen != nil {
		ss.screenNowLocked() // the last screen, for a later attach or peek
	}
	ss.outMu.Unlock()
	ss.log.Info("exited", "code", ss.exit.Code, "signal", ss.exit.Signal)
	if cl != nil && !ss.keep {
		cl.last(protocol.TypeExit, &ss.exit)
		cl.leave()
	}
	for w := range watchers {
		go w.end(&ss.exit)
	}
	close(ss.done)
	if ss.screen != nil {
		ss.screen.close()
	}
	for _, o := range ss.outs {
		o.f.Close()
	}
	if ss.stdin != nil && ss.master == nil {
		ss.stdin.Close()
	}
	if ss.keep {
		// Its linger starts now; a client that is given the exit
		// (gaveExit) forgets it sooner.
		ss.srv.kept.exited(ss)
	}
	if cl != nil && ss.keep {
		// Its feed sends the output it has yet to get, then the exit.
		ss.outMu.Lock()
		cl.end = &ending{t: protocol.TypeExit, v: &ss.exit}
		cl.nudge()
		ss.outMu.Unlock()
	}
	ss.srv.sessionEnded()
}

// attach makes cl the first client of a session that has just started; a
// kept session's client gets its output once it is greeted.
func (ss *session) attach(cl *client) {
	ss.outMu.Lock()
	ss.attachLocked(cl, ss.sent)
	ss.outMu.Unlock()
}

// attachLocked makes cl the session's client from output byte from on,
// taking the session over from the client attached, if any, which is told
// so and let go. outMu is held: of two attaches at once, one takes the
// session over from the other.
func (ss *session) attachLocked(cl *client, from uint64) {
	if old := ss.client; old != nil && old != cl {
		ss.log.Info("another client attached; detaching the current one")
		old.takenOver.Store(true)
		old.in.close() // its input, queued or to come, goes nowhere
		old.end = &ending{t: protocol.TypeDetached, v: takenOver, atOnce: true}
		old.nudge()
	}
	ss.client = cl
	cl.next = from
	ss.attached.Store(true)
	ss.detachedAt = time.Time{}
	ss.detachGen++
}

// dropLocked forgets cl as the session's client; a kept session starts its
// linger. outMu is held.
func (ss *session) dropLocked(cl *client) {
	if ss.client != cl {
		return
	}
	ss.client = nil
	ss.attached.Store(false)
	ss.leftTerminal, ss.leftAt = cl.terminal, cl.next // what its terminal was given
	if !ss.keep || ss.exited {
		return
	}
	ss.detachedAt = time.Now()
	ss.detachGen++
	ss.log.Info("detached")
	if ss.linger > 0 {
		gen, forgettable := ss.detachGen, weak.Make(ss)
		time.AfterFunc(ss.linger, func() {
			ss := forgettable.Value() // nil: forgotten, and its memory let go
			if ss == nil {
				return
			}
			ss.outMu.Lock()
			stale := ss.detachGen != gen || ss.client != nil || ss.exited
			ss.outMu.Unlock()
			if !stale {
				ss.log.Info("detached for its whole linger; hanging up", "linger", ss.linger)
				ss.hangup()
			}
		})
	}
}

// detach ends cl's part in the session.
func (ss *session) detach(cl *client) {
	ss.outMu.Lock()
	ss.dropLocked(cl)
	ss.outMu.Unlock()
	cl.leave()
}

// runClient applies cl's frames until it leaves: the program's end, another
// client taking over, a protocol error or the connection's end. A plain
// session is hung up when its client goes; a kept one is detached.
func (ss *session) runClient(cl *client, r *protocol.Reader) {
	go cl.in.run(ss, cl.w)
	readErr := make(chan error, 1)
	go func() {
		// The thread waits for this session's frames alone (threadConn).
		// It is never unlocked, so it ends with the goroutine: the
		// threads of sessions gone do not stay with the agent.
		runtime.LockOSThread()
		if tc, ok := cl.conn.(*threadConn); ok {
			tc.preferWakeups()
		}
		readErr <- ss.readFrames(cl, r)
	}()
	select {
	case <-cl.gone:
		return
	case err := <-readErr:
		var perr *protocol.Error
		if cl.hadLast() {
			<-cl.gone
			return
		}
		if errors.As(err, &perr) {
			ss.log.Warn("protocol error, ending the client's part", "err", err)
			// A pump may be writing to the client: it is detached first,
			// so that the error is its last frame.
			ss.detach(cl)
			cl.last(protocol.TypeError, perr)
		} else {
			ss.log.Info("connection lost", "err", err)
			cl.conn.Close() // a pump blocked writing to it gives up
			ss.detach(cl)
		}
	}
	if !ss.keep {
		ss.log.Info("hanging up")
		ss.hangup()
		<-ss.done
	}
}

// readFrames applies the host's frames until the connection fails. A
// *protocol.Error return is the host's fault; anything else is the
// connection's end.
func (ss *session) readFrames(cl *client, r *protocol.Reader) error {
	tc, _ := cl.conn.(*threadConn)
	for {
		buf := inputBufs.Get().(*[]byte)
		t, p, err := r.NextInto(buf)
		if err != nil {
			if errors.Is(err, protocol.ErrTooLarge) || errors.Is(err, protocol.ErrUnknownType) {
				return &protocol.Error{Kind: protocol.KindProtocol, Message: err.Error()}
			}
			return err
		}
		if tc != nil {
			tc.noteFrame(t == protocol.TypeStdin)
		}
		if cl.takenOver.Load() && t != protocol.TypePing {
			inputBufs.Put(buf) // it drives the session no more
			continue
		}
		switch t {
		case protocol.TypeStdin:
			if err := cl.in.push(p, buf); err != nil {
				return err
			}
		case protocol.TypeStdinEOF:
			if err := cl.in.closeInput(); err != nil {
				return err
			}
		case protocol.TypeResize:
			size, err := protocol.DecodeResize(p)
			if err != nil {
				return &protocol.Error{Kind: protocol.KindProtocol, Message: err.Error()}
			}
			ss.resize(size)
		case protocol.TypeSignal:
			var sig protocol.Signal
			if err := protocol.Decode(t, p, &sig); err != nil {
				return &protocol.Error{Kind: protocol.KindProtocol, Message: err.Error()}
			}
			ss.signal(sig.Name)
		case protocol.TypePing:
			cl.w.WriteFrame(protocol.TypePong, p)
		default:
			return &protocol.Error{Kind: protocol.KindProtocol, Message: fmt.Sprintf("unexpected %s frame during a session", t)}
		}
		if t != protocol.TypeStdin {
			inputBufs.Put(buf) // done with before the next frame is read
		}
	}
}
