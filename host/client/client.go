// Package client is the host side of a cork session: it speaks the protocol
// to corkd over any stream, relays stdio, and sends resizes and signals.
package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/corkvm/cork/protocol"
	"golang.org/x/sys/unix"
)

// ErrNoExit is returned when the connection ends before the program's exit
// status arrives: the session's outcome is unknown, and never a success.
var ErrNoExit = errors.New("connection to corkd lost before the program's exit status arrived")

// ErrDetached is returned when the client left a kept session at the
// user's request (Session.Detach): the session runs on.
var ErrDetached = errors.New("detached from the session")

// TakenOverError is returned when another client attached to the kept
// session and took it over.
type TakenOverError struct{ Reason string }

func (e *TakenOverError) Error() string { return "detached: " + e.Reason }

// CannotKeepError is returned when the agent speaks no protocol version
// with kept sessions.
type CannotKeepError struct{ Software string }

func (e *CannotKeepError) Error() string {
	return fmt.Sprintf("this agent cannot keep sessions (%s speaks protocol version 1); update corkd in the guest", e.Software)
}

// Session describes one program to run, or one kept session to attach to,
// and where its stdio goes.
type Session struct {
	Exec protocol.Exec
	// Attach, when set, attaches to a kept session instead of running
	// Exec.
	Attach *protocol.Attach
	// Stdin is copied to the program when Exec.Stdin is set (always when
	// attaching); its EOF is sent as StdinEOF.
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Sizes, when not nil, carries the terminal's size changes; the
	// latest one is sent whenever the connection is free.
	Sizes *SizeSlot
	// Signals carries names of signals to forward ("TERM").
	Signals <-chan string
	// Software names this side in its Hello.
	Software string
	// Detach, when closed, leaves a kept session running: Run returns
	// ErrDetached.
	Detach <-chan struct{}
	// Redial, when set, reconnects after a kept session's connection
	// drops, for up to Reconnect, and Run resumes the session from the
	// last output byte it got: nothing is lost or shown twice when the
	// agent still holds the bytes missed, and the program redraws when it
	// does not.
	Redial    func(ctx context.Context) (io.ReadWriteCloser, error)
	Reconnect time.Duration

	// ID and Name are the session's, as the agent gives them.
	ID, Name string
	// Resumes counts the reconnections Run made.
	Resumes int
}

// Ping sends payload (at most protocol.MaxPing bytes) after the hello
// exchange and waits for its echo.
func Ping(r *protocol.Reader, w *protocol.Writer, payload []byte) error {
	if err := w.WriteFrame(protocol.TypePing, payload); err != nil {
		return fmt.Errorf("sending ping: %w", err)
	}
	p, err := answer(r, protocol.TypePing, protocol.TypePong)
	if err != nil {
		return err
	}
	if !bytes.Equal(p, payload) {
		return fmt.Errorf("corkd answered a ping with pong %q", p)
	}
	return nil
}

// answer reads the agent's answer to a request of type t, which must be
// of type want, and returns its payload. An Error is the agent's refusal.
func answer(r *protocol.Reader, t, want protocol.Type) ([]byte, error) {
	at, p, err := r.Next()
	switch {
	case err != nil:
		return nil, fmt.Errorf("waiting for corkd's answer: %w", err)
	case at == protocol.TypeError:
		return nil, decodeError(p)
	case at != want:
		return nil, fmt.Errorf("corkd answered %s with %s", t, at)
	}
	return p, nil
}

func decodeError(p []byte) error {
	var e protocol.Error
	if err := protocol.Decode(protocol.TypeError, p, &e); err != nil {
		return err
	}
	return &e
}

// Run runs s over conn and returns the program's exit. A *protocol.Error
// is corkd refusing or ending the session; ErrNoExit is a lost connection;
// ErrDetached and *TakenOverError leave a kept session running. Run closes
// its connections before it returns; cancelling ctx closes them early.
func (s *Session) Run(ctx context.Context, conn io.ReadWriteCloser) (protocol.Exit, error) {
	l := newLink(conn)
	defer l.close()
	stop := context.AfterFunc(ctx, l.close)
	defer stop()

	size := s.Exec.Size
	if s.Attach != nil {
		size = s.Attach.Size
	}
	l.setSize(size)
	if err := s.open(l.r, l.w); err != nil {
		return protocol.Exit{}, err
	}
	r := &run{s: s, l: l, credit: newCredit(),
		wantStdin: s.Stdin != nil && (s.Exec.Stdin || s.Attach != nil),
		// A kept session counts its output frame by frame to resume
		// from it: only a plain one's output is spliced.
		splice: s.plain() && splices(conn, s.Stdout),
	}
	done := make(chan struct{})
	defer close(done)
	r.startSenders(size, done)
	defer r.credit.close()
	return r.loop(ctx)
}

// plain reports whether s runs a program that is not kept, whose session
// ends with its connection.
func (s *Session) plain() bool { return s.Attach == nil && !s.Exec.Keep }

// run is one Run of a session: its link to the agent, the stdin credit,
// and what a resume starts from.
type run struct {
	s         *Session
	l         *link
	credit    *credit
	detaching atomic.Bool // the user detached: the connection's end is no loss
	wantStdin bool
	stdinOn   bool   // sendStdin was started
	splice    bool   // output goes into s.Stdout by splices
	seen      uint64 // output bytes of the session, counted from its start
	holder    uint64 // the agent's number for this client's hold on a kept session
}

// startSenders starts what writes to the agent beside Run's reads, until
// done is closed: sizes, signals, and the detach, which closes the
// connection under the read.
func (r *run) startSenders(size protocol.WindowSize, done <-chan struct{}) {
	s := r.s
	if s.Sizes != nil {
		go sendSizes(r.l, s.Sizes, size, done)
	}
	if s.Signals != nil {
		go sendSignals(r.l, s.Signals, done)
	}
	if s.Detach != nil {
		go func() {
			select {
			case <-s.Detach:
				r.detaching.Store(true)
				r.l.closeConn()
			case <-done:
			}
		}()
	}
}

// loop reads the agent's frames until the session's outcome.
func (r *run) loop(ctx context.Context) (protocol.Exit, error) {
	for {
		// Every frame is consumed before the next is read: output goes
		// out at once, so its buffer can be reused.
		t, p, err := r.next()
		var out *outputError
		switch {
		case errors.As(err, &out):
			return protocol.Exit{}, err
		case err != nil:
			if err := r.lost(ctx, err); err != nil {
				return protocol.Exit{}, err
			}
			continue
		}
		exit, err := r.handle(t, p)
		if err != nil {
			return protocol.Exit{}, err
		}
		if exit != nil {
			return *exit, nil
		}
	}
}

// outputError is a failure to write output that has ended the session.
type outputError struct{ err error }

func (e *outputError) Error() string { return fmt.Sprintf("writing output: %v", e.err) }
func (e *outputError) Unwrap() error { return e.err }

// next reads the agent's next frame. When output is spliced, next writes
// each Stdout frame into s.Stdout as it reads it, and reads on.
func (r *run) next() (protocol.Type, []byte, error) {
	if !r.splice {
		return r.l.r.NextShared()
	}
	for {
		t, p, _, err := r.l.r.NextCopying(protocol.TypeStdout, r.s.Stdout)
		switch {
		case t != protocol.TypeStdout:
			return t, p, err
		case errors.Is(err, syscall.EPIPE):
			// Nobody reads the pipe any more. A write fails the same
			// way and does what a write would have done here: Go ends
			// a program whose stdout it is with SIGPIPE, as cat ends,
			// and reports it otherwise.
			_, err = r.s.Stdout.Write([]byte{0})
			return t, nil, &outputError{err}
		case err != nil:
			return t, p, err
		}
	}
}

// lost is what a connection that failed with err means: nil when the
// session is back on a new one, else Run's error.
func (r *run) lost(ctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case r.detaching.Load():
		return ErrDetached
	case r.l.resumable() && r.s.Redial != nil:
		if r.s.resume(ctx, r.l, r.seen, r.holder) == nil {
			return nil
		}
	}
	if err == io.EOF || errors.Is(err, protocol.ErrTruncated) {
		return ErrNoExit
	}
	return fmt.Errorf("%w: %v", ErrNoExit, err)
}

// handle acts on one frame from the agent. An exit or an error ends the
// session.
func (r *run) handle(t protocol.Type, p []byte) (*protocol.Exit, error) {
	s := r.s
	switch t {
	case protocol.TypeStarted:
		return nil, r.started(p)
	case protocol.TypeAttached:
		return nil, r.attached(p)
	case protocol.TypeStdout:
		r.seen += uint64(len(p))
		if _, err := s.Stdout.Write(p); err != nil {
			return nil, fmt.Errorf("writing output: %w", err)
		}
	case protocol.TypeRestore:
		// The session's screen drawn for this terminal: not output, so
		// not counted.
		if _, err := s.Stdout.Write(p); err != nil {
			return nil, fmt.Errorf("writing output: %w", err)
		}
	case protocol.TypeStderr:
		r.seen += uint64(len(p))
		if _, err := s.Stderr.Write(p); err != nil {
			return nil, fmt.Errorf("writing error output: %w", err)
		}
	case protocol.TypeStdinAck:
		n, err := protocol.DecodeStdinAck(p)
		if err != nil {
			return nil, err
		}
		r.credit.give(int(n))
	case protocol.TypePong:
	case protocol.TypeExit:
		var e protocol.Exit
		if err := protocol.Decode(t, p, &e); err != nil {
			return nil, err
		}
		return &e, nil
	case protocol.TypeError:
		return nil, decodeError(p)
	case protocol.TypeDetached:
		var d protocol.Detached
		protocol.Decode(t, p, &d)
		return nil, &TakenOverError{Reason: d.Reason}
	default:
		return nil, fmt.Errorf("protocol: corkd sent an unexpected %s frame", t)
	}
	return nil, nil
}

// started takes the agent's answer to an Exec.
func (r *run) started(p []byte) error {
	var st protocol.Started
	if err := protocol.Decode(protocol.TypeStarted, p, &st); err != nil {
		return err
	}
	r.s.ID, r.s.Name, r.holder = st.Session, st.Name, st.Holder
	r.l.setResumable(st.Kept)
	r.startStdin(st.StdinWindow)
	return nil
}

// attached takes the agent's answer to an Attach, the first or a
// resume's.
func (r *run) attached(p []byte) error {
	var at protocol.Attached
	if err := protocol.Decode(protocol.TypeAttached, p, &at); err != nil {
		return err
	}
	r.s.ID, r.s.Name, r.holder = at.Session, at.Name, at.Holder
	r.seen = at.From
	r.l.setResumable(at.Running && !at.ReadOnly)
	if !at.ReadOnly {
		r.startStdin(at.StdinWindow)
	}
	return nil
}

// startStdin takes the stdin window of the link's current connection,
// and starts sending stdin the first time.
func (r *run) startStdin(window uint32) {
	r.credit.reset(int(window), r.l.generation())
	if r.wantStdin && !r.stdinOn {
		r.stdinOn = true
		go sendStdin(r.l, r.s.Stdin, r.credit)
	}
}

func sendSignals(l *link, sigs <-chan string, done <-chan struct{}) {
	for {
		select {
		case name := <-sigs:
			if l.write(protocol.TypeSignal, protocol.MustJSON(&protocol.Signal{Name: name}), true) != nil {
				return
			}
		case <-done:
			return
		}
	}
}

// splices reports whether output for out can go from conn in the kernel:
// splice(2) from a unix socket into a pipe, with no copy through cork,
// which moves pipe output faster than read and write (docs/benchmarks.md).
func splices(conn io.ReadWriteCloser, out io.Writer) bool {
	f, ok := out.(*os.File)
	if !ok || runtime.GOOS != "linux" {
		return false
	}
	if _, ok := conn.(*net.UnixConn); !ok {
		return false
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	pipe := false
	rc.Control(func(fd uintptr) {
		var st unix.Stat_t
		pipe = unix.Fstat(int(fd), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFIFO
	})
	return pipe
}
