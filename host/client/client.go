// Package client is the host side of a cork session: it speaks the protocol
// to corkd over any stream, relays stdio, and sends resizes and signals.
package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/corkvm/cork/protocol"
)

// ErrNoExit is returned when the connection ends before the program's exit
// status arrives: the session's outcome is unknown, and never a success.
var ErrNoExit = errors.New("connection to corkd lost before the program's exit status arrived")

// Session describes one program to run and where its stdio goes.
type Session struct {
	Exec protocol.Exec
	// Stdin is copied to the program when Exec.Stdin is set; its EOF is
	// sent as StdinEOF.
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
}

// Hello exchanges Hello frames and returns the agent's.
func Hello(r *protocol.Reader, w *protocol.Writer, software string) (*protocol.Hello, error) {
	if err := w.WriteJSON(protocol.TypeHello, &protocol.Hello{
		MinVersion: protocol.MinVersion, MaxVersion: protocol.MaxVersion,
		Capabilities: []string{protocol.CapTTY, protocol.CapPipes, protocol.CapSignal, protocol.CapPing},
		Software:     software,
	}); err != nil {
		return nil, fmt.Errorf("sending hello: %w", err)
	}
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
// is corkd refusing or ending the session; ErrNoExit is a lost connection.
// Run closes conn before it returns; cancelling ctx closes it early.
func (s *Session) Run(ctx context.Context, conn io.ReadWriteCloser) (protocol.Exit, error) {
	var closeOnce sync.Once
	closeConn := func() { closeOnce.Do(func() { conn.Close() }) }
	defer closeConn()
	stop := context.AfterFunc(ctx, closeConn)
	defer stop()

	r := protocol.NewReader(conn)
	w := protocol.NewWriter(conn)
	if _, err := Hello(r, w, s.Software); err != nil {
		return protocol.Exit{}, err
	}
	if err := w.WriteJSON(protocol.TypeExec, &s.Exec); err != nil {
		return protocol.Exit{}, fmt.Errorf("sending exec: %w", err)
	}

	done := make(chan struct{})
	defer close(done)
	if s.Sizes != nil {
		go sendSizes(w, s.Sizes, s.Exec.Size, done)
	}
	if s.Signals != nil {
		go sendSignals(w, s.Signals, done)
	}
	credit := newCredit()
	defer credit.close()

	for {
		// Every frame is consumed before the next is read: output goes
		// out at once, so its buffer can be reused.
		t, p, err := r.NextShared()
		if err != nil {
			if ctx.Err() != nil {
				return protocol.Exit{}, ctx.Err()
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
			if s.Exec.Stdin && s.Stdin != nil {
				credit.give(int(st.StdinWindow))
				go sendStdin(w, s.Stdin, credit)
			}
		case protocol.TypeStdout:
			if _, err := s.Stdout.Write(p); err != nil {
				return protocol.Exit{}, fmt.Errorf("writing output: %w", err)
			}
		case protocol.TypeStderr:
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
		default:
			return protocol.Exit{}, fmt.Errorf("protocol: corkd sent an unexpected %s frame", t)
		}
	}
}

// sendStdin copies in to the session within the stdin window, then sends
// StdinEOF when in ends.
func sendStdin(w *protocol.Writer, in io.Reader, c *credit) {
	const chunk = 32 << 10
	buf := make([]byte, chunk)
	for {
		n := c.take(chunk)
		if n == 0 {
			return // the session is over
		}
		m, err := in.Read(buf[:n])
		c.give(n - m)
		if m > 0 {
			if w.WriteFrame(protocol.TypeStdin, buf[:m]) != nil {
				return
			}
		}
		if err != nil {
			w.WriteFrame(protocol.TypeStdinEOF, nil)
			return
		}
	}
}

func sendSignals(w *protocol.Writer, sigs <-chan string, done <-chan struct{}) {
	for {
		select {
		case name := <-sigs:
			if w.WriteJSON(protocol.TypeSignal, &protocol.Signal{Name: name}) != nil {
				return
			}
		case <-done:
			return
		}
	}
}
