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

// Hello exchanges Hello frames and returns the agent's.
func Hello(r *protocol.Reader, w *protocol.Writer, software string) (*protocol.Hello, error) {
	if err := sendHello(w, software); err != nil {
		return nil, err
	}
	return readHello(r)
}

func hello(software string) *protocol.Hello {
	return &protocol.Hello{
		MinVersion: protocol.MinVersion, MaxVersion: protocol.MaxVersion,
		Capabilities: []string{protocol.CapTTY, protocol.CapPipes, protocol.CapSignal, protocol.CapPing, protocol.CapKeep},
		Software:     software,
	}
}

func sendHello(w *protocol.Writer, software string) error {
	if err := w.WriteJSON(protocol.TypeHello, hello(software)); err != nil {
		return fmt.Errorf("sending hello: %w", err)
	}
	return nil
}

// readHello reads the agent's answer to the hello and checks that a
// version was agreed.
func readHello(r *protocol.Reader) (*protocol.Hello, error) {
	t, p, err := r.Next()
	if err != nil {
		if err == io.EOF {
			return nil, errors.New("corkd closed the connection before its hello")
		}
		return nil, fmt.Errorf("reading corkd's hello: %w", err)
	}
	switch t {
	case protocol.TypeHello:
	case protocol.TypeError:
		return nil, decodeError(p)
	default:
		return nil, fmt.Errorf("corkd sent %s before its hello", t)
	}
	var h protocol.Hello
	if err := protocol.Decode(t, p, &h); err != nil {
		return nil, err
	}
	if _, err := protocol.Negotiate(h, protocol.MinVersion, protocol.MaxVersion); err != nil {
		return nil, err
	}
	return &h, nil
}

// Ping sends payload (at most protocol.MaxPing bytes) after the hello
// exchange and waits for its echo.
func Ping(r *protocol.Reader, w *protocol.Writer, payload []byte) error {
	if err := w.WriteFrame(protocol.TypePing, payload); err != nil {
		return fmt.Errorf("sending ping: %w", err)
	}
	t, p, err := r.Next()
	switch {
	case err != nil:
		return fmt.Errorf("waiting for pong: %w", err)
	case t == protocol.TypeError:
		return decodeError(p)
	case t != protocol.TypePong || !bytes.Equal(p, payload):
		return fmt.Errorf("corkd answered a ping with %s %q", t, p)
	}
	return nil
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
	if s.Attach == nil && !s.Exec.Keep {
		// Every version runs a plain Exec, so it goes with the hello,
		// in one write, instead of a round trip later: the agent reads
		// it once it has answered, and a refusal of the hello still
		// comes first.
		b, err := protocol.AppendJSON(nil, protocol.TypeHello, hello(s.Software))
		if err == nil {
			b, err = protocol.AppendJSON(b, protocol.TypeExec, &s.Exec)
		}
		if err == nil {
			err = l.w.WriteFramed(b)
		}
		if err != nil {
			return protocol.Exit{}, fmt.Errorf("sending the request: %w", err)
		}
		if _, err := readHello(l.r); err != nil {
			return protocol.Exit{}, err
		}
	} else {
		h, err := Hello(l.r, l.w, s.Software)
		if err != nil {
			return protocol.Exit{}, err
		}
		if h.Version < 2 {
			return protocol.Exit{}, &CannotKeepError{Software: h.Software}
		}
		if s.Attach != nil {
			err = l.w.WriteJSON(protocol.TypeAttach, s.Attach)
		} else {
			err = l.w.WriteJSON(protocol.TypeExec, &s.Exec)
		}
		if err != nil {
			return protocol.Exit{}, fmt.Errorf("sending the request: %w", err)
		}
	}

	done := make(chan struct{})
	defer close(done)
	if s.Sizes != nil {
		go sendSizes(l, s.Sizes, size, done)
	}
	if s.Signals != nil {
		go sendSignals(l, s.Signals, done)
	}
	var detaching atomic.Bool
	if s.Detach != nil {
		go func() {
			select {
			case <-s.Detach:
				detaching.Store(true)
				l.closeConn()
			case <-done:
			}
		}()
	}
	credit := newCredit()
	defer credit.close()
	wantStdin := s.Stdin != nil && (s.Exec.Stdin || s.Attach != nil)
	stdinStarted := false
	startStdin := func(window uint32) {
		credit.reset(int(window), l.generation())
		if wantStdin && !stdinStarted {
			stdinStarted = true
			go sendStdin(l, s.Stdin, credit)
		}
	}
	var seen uint64   // output bytes of the session, counted from its start
	var holder uint64 // the agent's number for this client's hold on a kept session
	// A kept session counts its output frame by frame to resume from it:
	// only a plain one's output is spliced.
	spliceOut := s.Attach == nil && !s.Exec.Keep && splices(conn, s.Stdout)

	for {
		// Every frame is consumed before the next is read: output goes
		// out at once, so its buffer can be reused.
		var t protocol.Type
		var p []byte
		var err error
		if spliceOut {
			t, p, _, err = l.r.NextCopying(protocol.TypeStdout, s.Stdout)
			if t == protocol.TypeStdout {
				if errors.Is(err, syscall.EPIPE) {
					// Nobody reads the pipe any more. A write fails the
					// same way and does what a write would have done
					// here: Go ends a program whose stdout it is with
					// SIGPIPE, as cat ends, and reports it otherwise.
					_, err = s.Stdout.Write([]byte{0})
					return protocol.Exit{}, fmt.Errorf("writing output: %w", err)
				}
				if err == nil {
					continue
				}
			}
		} else {
			t, p, err = l.r.NextShared()
		}
		if err != nil {
			switch {
			case ctx.Err() != nil:
				return protocol.Exit{}, ctx.Err()
			case detaching.Load():
				return protocol.Exit{}, ErrDetached
			case l.resumable() && s.Redial != nil:
				if rerr := s.resume(ctx, l, seen, holder); rerr == nil {
					continue
				}
			}
			if err == io.EOF || errors.Is(err, protocol.ErrTruncated) {
				return protocol.Exit{}, ErrNoExit
			}
			return protocol.Exit{}, fmt.Errorf("%w: %v", ErrNoExit, err)
		}
		switch t {
		case protocol.TypeStarted:
			var st protocol.Started
			if err := protocol.Decode(t, p, &st); err != nil {
				return protocol.Exit{}, err
			}
			s.ID, s.Name, holder = st.Session, st.Name, st.Holder
			l.setResumable(st.Kept)
			startStdin(st.StdinWindow)
		case protocol.TypeAttached:
			var at protocol.Attached
			if err := protocol.Decode(t, p, &at); err != nil {
				return protocol.Exit{}, err
			}
			s.ID, s.Name, holder = at.Session, at.Name, at.Holder
			seen = at.From
			l.setResumable(at.Running && !at.ReadOnly)
			if !at.ReadOnly {
				startStdin(at.StdinWindow)
			}
		case protocol.TypeStdout:
			seen += uint64(len(p))
			if _, err := s.Stdout.Write(p); err != nil {
				return protocol.Exit{}, fmt.Errorf("writing output: %w", err)
			}
		case protocol.TypeRestore:
			// The session's screen drawn for this terminal: not output,
			// so not counted.
			if _, err := s.Stdout.Write(p); err != nil {
				return protocol.Exit{}, fmt.Errorf("writing output: %w", err)
			}
		case protocol.TypeStderr:
			seen += uint64(len(p))
			if _, err := s.Stderr.Write(p); err != nil {
				return protocol.Exit{}, fmt.Errorf("writing error output: %w", err)
			}
		case protocol.TypeStdinAck:
			n, err := protocol.DecodeStdinAck(p)
			if err != nil {
				return protocol.Exit{}, err
			}
			credit.give(int(n))
		case protocol.TypePong:
		case protocol.TypeExit:
			var e protocol.Exit
			if err := protocol.Decode(t, p, &e); err != nil {
				return protocol.Exit{}, err
			}
			return e, nil
		case protocol.TypeError:
			return protocol.Exit{}, decodeError(p)
		case protocol.TypeDetached:
			var d protocol.Detached
			protocol.Decode(t, p, &d)
			return protocol.Exit{}, &TakenOverError{Reason: d.Reason}
		default:
			return protocol.Exit{}, fmt.Errorf("protocol: corkd sent an unexpected %s frame", t)
		}
	}
}

// resume reconnects to the agent and attaches again from output byte seen,
// as the holder the agent numbered, retrying with backoff for up to
// s.Reconnect. An agent whose session another client took over meanwhile
// answers Detached, which ends Run.
func (s *Session) resume(ctx context.Context, l *link, seen, holder uint64) error {
	deadline := time.Now().Add(s.Reconnect)
	backoff := 10 * time.Millisecond
	for {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		err := s.reattach(ctx, l, seen, holder)
		if err == nil {
			s.Resumes++
			return nil
		}
		if time.Now().Add(backoff).After(deadline) {
			return err
		}
		time.Sleep(backoff)
		backoff = min(2*backoff, time.Second)
	}
}

func (s *Session) reattach(ctx context.Context, l *link, seen, holder uint64) error {
	conn, err := s.Redial(ctx)
	if err != nil {
		return err
	}
	r, w := protocol.NewReader(conn), protocol.NewWriter(conn)
	if _, err := Hello(r, w, s.Software); err != nil {
		conn.Close()
		return err
	}
	if err := w.WriteJSON(protocol.TypeAttach, &protocol.Attach{Session: s.ID, Resume: &seen, Holder: holder, Size: l.currentSize()}); err != nil {
		conn.Close()
		return err
	}
	l.swap(conn, r, w)
	return nil
}

// sendStdin copies in to the session within the stdin window, then sends
// StdinEOF when in ends. Input typed while a kept session reconnects is
// dropped, as over any connection that breaks.
func sendStdin(l *link, in io.Reader, c *credit) {
	// Input is read straight after a frame header and goes out in one
	// write without a copy. Frames as large as the agent's output frames
	// keep the acks and wake-ups per byte as few as output's.
	const chunk = 128 << 10
	frame := protocol.NewDataFrame(chunk)
	for {
		n, gen := c.take(chunk)
		if n == 0 {
			return // the session is over
		}
		m, err := in.Read(frame[protocol.HeaderSize : protocol.HeaderSize+n])
		c.putBack(n-m, gen)
		if m > 0 {
			protocol.PutHeader(frame, protocol.TypeStdin, m)
			if !sendInput(l, c, frame[:protocol.HeaderSize+m], gen) {
				return
			}
		}
		if err != nil {
			l.write(protocol.TypeStdinEOF, nil, true)
			return
		}
	}
}

// sendInput sends frame, stdin read on credit from connection gen's
// window. When the connection was replaced while the input was read (a
// resume), the input goes on the new one instead, on credit from the new
// window: the agent treats input beyond its window as a protocol error.
// It reports false when the session is over.
func sendInput(l *link, c *credit, frame []byte, gen int) bool {
	err := l.writeFramedOn(frame, gen)
	if err != errStale {
		return err == nil || l.resumable()
	}
	stale, data := gen, frame[protocol.HeaderSize:]
	for len(data) > 0 {
		n, g := c.take(len(data))
		if n == 0 {
			return false
		}
		if g == stale {
			// The new connection's window is not known yet.
			c.putBack(n, g)
			if !c.waitPast(stale) {
				return false
			}
			continue
		}
		part := make([]byte, protocol.HeaderSize+n)
		copy(part[protocol.HeaderSize:], data[:n])
		protocol.PutHeader(part, protocol.TypeStdin, n)
		switch err := l.writeFramedOn(part, g); {
		case err == errStale:
			stale = g
		case err != nil:
			return l.resumable()
		default:
			data = data[n:]
		}
	}
	return true
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
