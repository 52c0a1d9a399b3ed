//go:build linux

package client

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/prototest"
)

// TestOutputIntoAPipe: a plain session's output into a pipe (spliced from
// the socket on Linux) arrives whole and in order, frames of every size
// among the other frames, before the exit status.
func TestOutputIntoAPipe(t *testing.T) {
	host, guest := prototest.SocketPair(t)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	if !splices(host, pw) {
		t.Fatal("a unix socket's output into a pipe is not spliced")
	}
	want := make([]byte, 3<<20)
	for i := range want {
		want[i] = byte(rand.IntN(256))
	}
	serveFake(guest, func(r *protocol.Reader, w *protocol.Writer, _ protocol.Exec) {
		w.WriteJSON(protocol.TypeStarted, &protocol.Started{})
		for rest := want; len(rest) > 0; {
			n := min(len(rest), 1+rand.IntN(200<<10)) // some buffered whole, some not
			w.WriteFrame(protocol.TypeStdout, rest[:n])
			w.WriteFrame(protocol.TypeStderr, []byte("e"))
			rest = rest[n:]
		}
		w.WriteJSON(protocol.TypeExit, &protocol.Exit{Code: 3})
	})
	got := make(chan []byte)
	go func() { b, _ := io.ReadAll(pr); got <- b }()
	var stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	exit, err := (&Session{Exec: protocol.Exec{Argv: []string{"x"}}, Stdout: pw, Stderr: &stderr}).Run(ctx, host)
	pw.Close()
	if err != nil || exit.Code != 3 {
		t.Fatalf("exit %+v, %v", exit, err)
	}
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("%d bytes of output arrived, want %d, or not the same bytes", len(b), len(want))
	}
	if stderr.Len() == 0 {
		t.Fatal("no error output")
	}
}

// TestOutputIntoAClosedPipe: output into a pipe nobody reads any more ends
// the session with an error that says so, as a write would.
func TestOutputIntoAClosedPipe(t *testing.T) {
	host, guest := prototest.SocketPair(t)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pw.Close()
	pr.Close()
	serveFake(guest, func(r *protocol.Reader, w *protocol.Writer, _ protocol.Exec) {
		w.WriteJSON(protocol.TypeStarted, &protocol.Started{})
		w.WriteFrame(protocol.TypeStdout, make([]byte, 64<<10))
		w.WriteJSON(protocol.TypeExit, &protocol.Exit{})
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = (&Session{Exec: protocol.Exec{Argv: []string{"x"}}, Stdout: pw, Stderr: io.Discard}).Run(ctx, host)
	if !errors.Is(err, unix.EPIPE) {
		t.Fatalf("got %v, want a broken pipe", err)
	}
}
