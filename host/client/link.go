package client

import (
	"errors"
	"io"
	"sync"

	"github.com/corkvm/cork/protocol"
)

// link is a session's current connection. A kept session's connection can
// be replaced (swap) when it drops and Run reconnects; the senders of
// stdin, sizes and signals write through the link, whichever connection
// it holds.
type link struct {
	mu        sync.Mutex
	changed   *sync.Cond
	conn      io.ReadWriteCloser
	r         *protocol.Reader // read by Run alone
	w         *protocol.Writer
	gen       int  // counts connections
	keep      bool // the session is kept: a failed write waits for the next connection
	closed    bool
	size      protocol.WindowSize // the newest terminal size, for a resuming attach
	attempts  uint64              // resuming attaches sent (Attach.Attempt); Run's alone
	closeOnce sync.Once
}

var errLinkClosed = errors.New("the session is over")

func newLink(conn io.ReadWriteCloser) *link {
	l := &link{conn: conn, r: protocol.NewReader(conn), w: protocol.NewWriter(conn)}
	l.changed = sync.NewCond(&l.mu)
	return l
}

// write sends a frame on the current connection. When that fails on a kept
// session and retry is set, it waits for the next connection and sends it
// there; without retry it reports the failure.
func (l *link) write(t protocol.Type, p []byte, retry bool) error {
	for {
		l.mu.Lock()
		w, gen, closed := l.w, l.gen, l.closed
		l.mu.Unlock()
		if closed {
			return errLinkClosed
		}
		err := w.WriteFrame(t, p)
		if err == nil || !retry || !l.resumable() {
			return err
		}
		l.mu.Lock()
		for l.gen == gen && !l.closed {
			l.changed.Wait()
		}
		l.mu.Unlock()
	}
}

// errStale is writeFramedOn's answer for a connection that was replaced.
var errStale = errors.New("the connection was replaced")

// writeFramedOn writes b, one whole frame, on connection gen only: errStale when the
// link has moved on to another.
func (l *link) writeFramedOn(b []byte, gen int) error {
	l.mu.Lock()
	w, closed, cur := l.w, l.closed, l.gen
	l.mu.Unlock()
	switch {
	case closed:
		return errLinkClosed
	case cur != gen:
		return errStale
	}
	return w.WriteFramed(b)
}

// generation numbers the link's current connection.
func (l *link) generation() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.gen
}

// writeOf writes the frame payload gives, holding the current connection's
// writer while it is chosen (protocol.Writer.WriteFrameOf).
func (l *link) writeOf(t protocol.Type, payload func() ([]byte, bool)) error {
	l.mu.Lock()
	w, closed := l.w, l.closed
	l.mu.Unlock()
	if closed {
		return errLinkClosed
	}
	return w.WriteFrameOf(t, payload)
}

// tryWriteOf is writeOf when the writer is free at once.
func (l *link) tryWriteOf(t protocol.Type, payload func() ([]byte, bool)) (bool, error) {
	l.mu.Lock()
	w, closed := l.w, l.closed
	l.mu.Unlock()
	if closed {
		return false, errLinkClosed
	}
	return w.TryWriteFrameOf(t, payload)
}

func (l *link) setResumable(keep bool) {
	l.mu.Lock()
	l.keep = keep
	l.mu.Unlock()
}

func (l *link) resumable() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.keep && !l.closed
}

func (l *link) setSize(s protocol.WindowSize) {
	l.mu.Lock()
	l.size = s
	l.mu.Unlock()
}

func (l *link) currentSize() protocol.WindowSize {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.size
}

// swap makes conn the link's connection, after the old one dropped.
func (l *link) swap(conn io.ReadWriteCloser, r *protocol.Reader, w *protocol.Writer) {
	l.mu.Lock()
	old := l.conn
	l.conn, l.r, l.w = conn, r, w
	l.gen++
	l.mu.Unlock()
	old.Close()
	l.changed.Broadcast()
}

// closeConn closes the current connection, which ends Run's read.
func (l *link) closeConn() {
	l.mu.Lock()
	conn := l.conn
	l.mu.Unlock()
	conn.Close()
}

// close ends the link for good.
func (l *link) close() {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		conn := l.conn
		l.mu.Unlock()
		conn.Close()
		l.changed.Broadcast()
	})
}
