package client

import (
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/copytree"
)

// fakeCopyAgent answers the hello as a copying agent, reads the CopyIn,
// then hands the connection to handle.
func fakeCopyAgent(t *testing.T, handle func(r *protocol.Reader, w *protocol.Writer)) net.Conn {
	t.Helper()
	host, guest := net.Pipe()
	hello := protocol.Hello{MinVersion: 1, MaxVersion: 2, Version: 2, Capabilities: []string{protocol.CapCopy}}
	serveHello(guest, hello, func(r *protocol.Reader, w *protocol.Writer, _ protocol.Type, _ []byte) { handle(r, w) })
	t.Cleanup(func() { host.Close() })
	return host
}

// copyInWithin runs a copy in and fails the test if it has not ended
// within a generous bound.
func copyInWithin(t *testing.T, conn net.Conn, send func(*copytree.Sender) error) error {
	t.Helper()
	ended := make(chan error, 1)
	go func() {
		_, err := (&Copy{}).In(conn, []byte("/d"), 1, send)
		ended <- err
	}()
	select {
	case err := <-ended:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("the copy in did not end")
		return nil
	}
}

// TestCopyInRefusedWhileSourceWaits: an agent that refuses the copy ends
// it at once, with its reason, while the source has nothing to give.
func TestCopyInRefusedWhileSourceWaits(t *testing.T) {
	conn := fakeCopyAgent(t, func(r *protocol.Reader, w *protocol.Writer) {
		w.WriteJSON(protocol.TypeError, &protocol.Error{Kind: protocol.KindUser, Message: "unknown user x"})
	})
	never := make(chan struct{})
	defer close(never)
	err := copyInWithin(t, conn, func(*copytree.Sender) error { <-never; return nil })
	if err == nil || !strings.Contains(err.Error(), "unknown user x") {
		t.Fatalf("%v, want the agent's reason", err)
	}
}

// TestCopyInSourceFails: a source that fails (a bad tar stream) is told to
// the agent, which then ends without an answer, and the source's error
// ends the copy.
func TestCopyInSourceFails(t *testing.T) {
	told := make(chan string, 1)
	conn := fakeCopyAgent(t, func(r *protocol.Reader, w *protocol.Writer) {
		for {
			typ, p, err := r.Next()
			if err != nil {
				told <- "nothing"
				return
			}
			if typ == protocol.TypeError {
				told <- string(p)
				return // as the agent does: no answer, the connection ends
			}
		}
	})
	err := copyInWithin(t, conn, func(*copytree.Sender) error { return errors.New("reading the tar stream: bad header") })
	if err == nil || !strings.Contains(err.Error(), "bad header") {
		t.Fatalf("%v, want the source's error", err)
	}
	if msg := <-told; !strings.Contains(msg, "bad header") {
		t.Fatalf("the agent was told %s", msg)
	}
}

// bigFile sends one file larger than any pipe holds.
func bigFile(s *copytree.Sender) error {
	const size = 8 << 20
	e := &protocol.Entry{Kind: protocol.EntryFile, Mode: 0o644, Size: size, Path: []byte("big")}
	return s.Put(e, true, io.LimitReader(zeros{}, size), []byte("big"))
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestCopyInAnsweredTooEarly: an agent that answers CopyDone before the
// copy was sent, and then reads nothing, ends the copy with a protocol
// error instead of leaving the sender blocked for ever.
func TestCopyInAnsweredTooEarly(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	conn := fakeCopyAgent(t, func(r *protocol.Reader, w *protocol.Writer) {
		w.WriteJSON(protocol.TypeCopyDone, &protocol.CopyDone{Files: 1})
		<-stop // reads nothing more
	})
	err := copyInWithin(t, conn, bigFile)
	if err == nil || !strings.Contains(err.Error(), "answered before the copy was sent") {
		t.Fatalf("%v, want a protocol error", err)
	}
}

// TestCopyInAnswered: an agent that answers once it has read the host's
// CopyDone ends the copy with its counts.
func TestCopyInAnswered(t *testing.T) {
	conn := fakeCopyAgent(t, func(r *protocol.Reader, w *protocol.Writer) {
		for {
			typ, _, err := r.Next()
			if err != nil {
				return
			}
			if typ == protocol.TypeCopyDone {
				w.WriteJSON(protocol.TypeCopyDone, &protocol.CopyDone{Files: 1, Bytes: 8 << 20})
				return
			}
		}
	})
	ended := make(chan error, 1)
	var res *CopyResult
	go func() {
		var err error
		res, err = (&Copy{}).In(conn, []byte("/d"), 1, bigFile)
		ended <- err
	}()
	select {
	case err := <-ended:
		if err != nil || res.Files != 1 || res.Bytes != 8<<20 {
			t.Fatalf("%+v, %v", res, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the copy in did not end")
	}
}
