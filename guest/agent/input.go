package agent

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/corkvm/cork/protocol"
)

// inputQueue hands stdin to the program from a goroutine of its own, so the
// frame reader never blocks on a program that does not read its input, and
// resize and signal frames behind a paste are applied at once.
// The host's stdin window bounds what it holds.
type inputQueue struct {
	dst io.WriteCloser // nil when the program's stdin is not the host's
	// closeDst: closing the queue closes dst, to end a write blocked on a
	// program that does not read. Not for a kept session's terminal,
	// which outlives the client whose input this queue carries.
	closeDst bool
	// via, for a kept session's terminal, writes to dst in the session's
	// stead: a write blocked on a program that does not read is the
	// session's, and the client that queued it leaves nothing behind.
	via     *inputWriter
	left    chan struct{} // closed by close
	mu      sync.Mutex
	cond    sync.Cond
	bufs    []queued
	pending int // bytes pushed and not yet acknowledged
	window  int
	eof     bool // the host sent StdinEOF
	closed  bool // the session is over
}

func newInputQueue(window int, dst io.WriteCloser, wanted, closeDst bool) *inputQueue {
	q := &inputQueue{window: window, closeDst: closeDst, left: make(chan struct{})}
	if wanted {
		q.dst = dst
	}
	q.cond.L = &q.mu
	return q
}

// queued is input waiting for the program: p, in the pooled buffer buf.
type queued struct {
	p   []byte
	buf *[]byte
}

// inputBufs pools the buffers stdin frames are read into: at full speed, a
// buffer allocated per frame keeps the garbage collector busy clearing and
// sweeping.
var inputBufs = sync.Pool{New: func() any { return new([]byte) }}

// push queues p, read into buf (from inputBufs), for the program. It
// refuses data after StdinEOF and data beyond the window the host was
// given; buf goes back to the pool once p is written.
func (q *inputQueue) push(p []byte, buf *[]byte) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		inputBufs.Put(buf) // its client drives the session no more
		return nil
	}
	if q.eof {
		return &protocol.Error{Kind: protocol.KindProtocol, Message: "stdin data after stdin EOF"}
	}
	if q.pending+len(p) > q.window {
		return &protocol.Error{Kind: protocol.KindProtocol, Message: fmt.Sprintf(
			"host overran the stdin window: %d bytes unacknowledged, the window is %d", q.pending+len(p), q.window)}
	}
	q.pending += len(p)
	q.bufs = append(q.bufs, queued{p, buf})
	q.cond.Signal()
	return nil
}

// closeInput records the host's StdinEOF; it takes effect after the data
// queued before it.
func (q *inputQueue) closeInput() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.eof {
		return &protocol.Error{Kind: protocol.KindProtocol, Message: "stdin EOF sent twice"}
	}
	q.eof = true
	q.cond.Signal()
	return nil
}

// close ends run and lets go of the input queued; a write blocked on the
// program is ended by closing dst, or left to the session's writer.
func (q *inputQueue) close() {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.closed = true
	close(q.left)
	for _, b := range q.bufs {
		inputBufs.Put(b.buf)
	}
	q.bufs = nil
	q.cond.Signal()
	q.mu.Unlock()
	if q.dst != nil && q.closeDst {
		q.dst.Close()
	}
}

// next waits for the next buffer; it returns nil and whether input ended
// (true) or the session did (false).
func (q *inputQueue) next() (queued, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.bufs) == 0 && !q.eof && !q.closed {
		q.cond.Wait()
	}
	if q.closed {
		return queued{}, false
	}
	if len(q.bufs) == 0 {
		return queued{}, true
	}
	b := q.bufs[0]
	q.bufs[0] = queued{}
	q.bufs = q.bufs[1:]
	return b, false
}

// run writes queued input to the program and acknowledges each buffer to
// the client that sent it once written (or dropped because the program
// closed its input).
func (q *inputQueue) run(ss *session, w *protocol.Writer) {
	broken := q.dst == nil
	atLineStart := true
	for {
		qb, eof := q.next()
		b := qb.p
		if qb.buf == nil {
			if eof && !broken {
				if ss.master != nil {
					q.write(eofBytes(ss.master, atLineStart), nil)
				} else {
					q.dst.Close()
				}
			}
			return
		}
		if !broken {
			endsLine := len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r')
			err := q.write(b, qb.buf)
			qb.buf = nil // the write put it back
			switch {
			case errors.Is(err, errClientLeft):
				return
			case err != nil:
				broken = true // the program closed its input; drop the rest
			case len(b) > 0:
				atLineStart = endsLine
			}
		}
		if qb.buf != nil {
			inputBufs.Put(qb.buf)
		}
		q.mu.Lock()
		q.pending -= len(b)
		q.mu.Unlock()
		if w.WriteFrame(protocol.TypeStdinAck, protocol.EncodeStdinAck(uint32(len(b)))) != nil {
			return
		}
	}
}

// errClientLeft is a write's answer when its client left before it was
// written.
var errClientLeft = errors.New("the client left")

// write writes p, from the pooled buf (nil: none), to the program, and
// puts buf back once written. Through the session's writer, it returns
// errClientLeft as soon as the client leaves, the write going on without
// it.
func (q *inputQueue) write(p []byte, buf *[]byte) error {
	if q.via == nil {
		_, err := q.dst.Write(p)
		if buf != nil {
			inputBufs.Put(buf)
		}
		return err
	}
	return q.via.write(p, buf, q.left)
}

// inputWriter writes a kept session's input to its terminal from one
// goroutine: at most one write, and one buffer, waits on a program that
// does not read, however many clients queued input and left.
type inputWriter struct {
	dst   io.Writer
	reqs  chan inputWrite
	ended <-chan struct{} // the session's end
}

type inputWrite struct {
	p    []byte
	buf  *[]byte
	done chan error // buffered: the writer never waits on a client gone
}

func newInputWriter(dst io.Writer, ended <-chan struct{}) *inputWriter {
	w := &inputWriter{dst: dst, reqs: make(chan inputWrite), ended: ended}
	go w.run()
	return w
}

func (w *inputWriter) run() {
	for {
		select {
		case r := <-w.reqs:
			_, err := w.dst.Write(r.p)
			if r.buf != nil {
				inputBufs.Put(r.buf)
			}
			r.done <- err
		case <-w.ended:
			return
		}
	}
}

// write hands p to the writer and waits for it to be written, or for the
// client to leave (left) or the session to end.
func (w *inputWriter) write(p []byte, buf *[]byte, left <-chan struct{}) error {
	done := make(chan error, 1)
	select {
	case w.reqs <- inputWrite{p, buf, done}:
	case <-left:
		if buf != nil {
			inputBufs.Put(buf)
		}
		return errClientLeft
	case <-w.ended:
		if buf != nil {
			inputBufs.Put(buf)
		}
		return errClientLeft
	}
	select {
	case err := <-done:
		return err
	case <-left:
		return errClientLeft
	}
}
