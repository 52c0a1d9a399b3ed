package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corkvm/cork/protocol"
)

// keptHandler serves one connection of a kept session after the hello: it
// gets the request (Exec or Attach) and answers it.
type keptHandler func(r *protocol.Reader, w *protocol.Writer, t protocol.Type, p []byte)

// keptFake is a version-2 agent that serves each connection, the first and
// every redial, with the next of its handlers.
type keptFake struct {
	mu       sync.Mutex
	handlers []keptHandler
	next     int
}

func (f *keptFake) dial() net.Conn {
	f.mu.Lock()
	var h keptHandler
	if f.next < len(f.handlers) {
		h = f.handlers[f.next]
	}
	f.next++
	f.mu.Unlock()
	host, guest := net.Pipe()
	serveHello(guest, protocol.Hello{MinVersion: 1, MaxVersion: 2, Version: 2, Software: "fake"},
		func(r *protocol.Reader, w *protocol.Writer, typ protocol.Type, p []byte) {
			if h != nil {
				h(r, w, typ, p)
			}
		})
	return host
}

// runKept runs s, a kept session, against handlers: the first serves its
// Exec, the others its resumes.
func runKept(t *testing.T, s *Session, handlers ...keptHandler) (protocol.Exit, error) {
	t.Helper()
	f := &keptFake{handlers: handlers}
	if s.Stdout == nil {
		s.Stdout = io.Discard
	}
	if s.Stderr == nil {
		s.Stderr = io.Discard
	}
	s.Reconnect = 5 * time.Second
	s.Redial = func(context.Context) (io.ReadWriteCloser, error) { return f.dial(), nil }
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return s.Run(ctx, f.dial())
}

func keptExec() protocol.Exec {
	return protocol.Exec{Argv: []string{"x"}, TTY: true, Keep: true, Stdin: true}
}

// TestResumeOfAClientTakenOverEnds: a client whose connection dropped
// resumes with the hold the agent numbered; an agent whose session
// another client took over meanwhile answers Detached, and Run ends with
// TakenOverError, never resuming again.
func TestResumeOfAClientTakenOverEnds(t *testing.T) {
	var asked protocol.Attach
	_, err := runKept(t, &Session{Exec: keptExec()},
		func(r *protocol.Reader, w *protocol.Writer, _ protocol.Type, _ []byte) {
			w.WriteJSON(protocol.TypeStarted, &protocol.Started{Session: "0123456789abcdef", Kept: true, Holder: 7, StdinWindow: 100})
			w.WriteFrame(protocol.TypeStdout, []byte("hello"))
		},
		func(r *protocol.Reader, w *protocol.Writer, typ protocol.Type, p []byte) {
			protocol.Decode(typ, p, &asked)
			w.WriteJSON(protocol.TypeDetached, &protocol.Detached{Reason: "another client attached to the session"})
		})
	var taken *TakenOverError
	if !errors.As(err, &taken) {
		t.Fatalf("Run: %v, want TakenOverError", err)
	}
	if asked.Holder != 7 || asked.Resume == nil || *asked.Resume != 5 {
		t.Fatalf("resumed with %+v, want holder 7 from byte 5", asked)
	}
}

// TestRepeatedResumeIsNumbered: a resume cut before the agent answered is
// made again with the same hold and a higher Attempt, so that the agent
// can tell it from the first, should it read that one late.
func TestRepeatedResumeIsNumbered(t *testing.T) {
	var asked []protocol.Attach
	resume := func(answer bool) keptHandler {
		return func(r *protocol.Reader, w *protocol.Writer, typ protocol.Type, p []byte) {
			var a protocol.Attach
			protocol.Decode(typ, p, &a)
			asked = append(asked, a)
			if answer {
				w.WriteJSON(protocol.TypeDetached, &protocol.Detached{Reason: "enough"})
			}
		}
	}
	runKept(t, &Session{Exec: keptExec()},
		func(r *protocol.Reader, w *protocol.Writer, _ protocol.Type, _ []byte) {
			w.WriteJSON(protocol.TypeStarted, &protocol.Started{Session: "0123456789abcdef", Kept: true, Holder: 7, StdinWindow: 100})
		},
		resume(false), resume(true))
	if len(asked) != 2 || asked[0].Holder != 7 || asked[1].Holder != 7 || asked[0].Attempt == 0 || asked[1].Attempt <= asked[0].Attempt {
		t.Fatalf("resumed with %+v, want hold 7 twice, numbered upwards", asked)
	}
}

// TestResumeDuringPasteStaysInWindow: a paste is being sent when the
// connection drops; after the resume, what goes on the new connection
// stays within its window (credit taken from the old window, and not spent
// there, is not added to it), and the whole paste after the cut arrives.
func TestResumeDuringPasteStaysInWindow(t *testing.T) {
	const window = 1000
	pr, pw := io.Pipe()
	cutDone := make(chan struct{})
	var got []byte
	var overrun string
	writer := make(chan error, 1)
	paste := bytes.Repeat([]byte("0123456789"), 300)
	go func() {
		pw.Write([]byte(strings.Repeat("a", 100)))
		<-cutDone
		_, err := pw.Write(paste) // the paste goes on across the resume
		pw.Close()
		writer <- err
	}()
	exit, err := runKept(t, &Session{Exec: keptExec(), Stdin: pr},
		func(r *protocol.Reader, w *protocol.Writer, _ protocol.Type, _ []byte) {
			w.WriteJSON(protocol.TypeStarted, &protocol.Started{Session: "0123456789abcdef", Kept: true, Holder: 1, StdinWindow: window})
			// The first 100 bytes arrive, unacknowledged; the host is
			// then waiting for more input on credit from this window.
			for n := 0; n < 100; {
				typ, p, err := r.Next()
				if err != nil {
					return
				}
				if typ == protocol.TypeStdin {
					n += len(p)
				}
			}
		},
		func(r *protocol.Reader, w *protocol.Writer, _ protocol.Type, _ []byte) {
			w.WriteJSON(protocol.TypeAttached, &protocol.Attached{Session: "0123456789abcdef", Running: true, StdinWindow: window, Holder: 1})
			close(cutDone)
			pending := 0
			for {
				typ, p, err := r.Next()
				if err != nil {
					return
				}
				switch typ {
				case protocol.TypeStdin:
					if pending+len(p) > window {
						overrun = fmt.Sprintf("%d bytes unacknowledged, the window is %d", pending+len(p), window)
						w.WriteJSON(protocol.TypeError, &protocol.Error{Kind: protocol.KindProtocol, Message: overrun})
						return
					}
					pending += len(p)
					got = append(got, p...)
					if pending >= window/2 { // the program reads in gulps
						w.WriteFrame(protocol.TypeStdinAck, protocol.EncodeStdinAck(uint32(pending)))
						pending = 0
					}
				case protocol.TypeStdinEOF:
					w.WriteJSON(protocol.TypeExit, &protocol.Exit{})
					return
				}
			}
		})
	if err != nil || overrun != "" {
		t.Fatalf("Run: exit %+v, %v; agent saw %s", exit, err, overrun)
	}
	if werr := <-writer; werr != nil || !bytes.Equal(got, paste) {
		t.Fatalf("the agent got %d bytes of the %d-byte paste (%v)", len(got), len(paste), werr)
	}
}
