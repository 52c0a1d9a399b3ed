package agent

import (
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
	mu       sync.Mutex
	cond     sync.Cond
	bufs     []queued
	pending  int // bytes pushed and not yet acknowledged
	window   int
	eof      bool // the host sent StdinEOF
	closed   bool // the session is over
}

func newInputQueue(window int, dst io.WriteCloser, wanted, closeDst bool) *inputQueue {
	q := &inputQueue{window: window, closeDst: closeDst}
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

// inputBufs pools the buffers stdin frames are read into: at hundreds of
// MiB/s, a buffer allocated per frame kept the garbage collector busy (a
// third of the agent's time in perf, clearing and sweeping).
var inputBufs = sync.Pool{New: func() any { return new([]byte) }}

// push queues p, read into buf (from inputBufs), for the program. It
// refuses data after StdinEOF and data beyond the window the host was
// given; buf goes back to the pool once p is written.
func (q *inputQueue) push(p []byte, buf *[]byte) error {
	q.mu.Lock()
	defer q.mu.Unlock()
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

// close ends run; a write blocked on the program is ended by closing dst.
func (q *inputQueue) close() {
	q.mu.Lock()
	q.closed = true
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
					q.dst.Write(eofBytes(ss.master, atLineStart))
				} else {
					q.dst.Close()
				}
			}
			return
		}
		if !broken {
			if _, err := q.dst.Write(b); err != nil {
				broken = true // the program closed its input; drop the rest
			} else if len(b) > 0 {
				atLineStart = b[len(b)-1] == '\n' || b[len(b)-1] == '\r'
			}
		}
		inputBufs.Put(qb.buf)
		q.mu.Lock()
		q.pending -= len(b)
		q.mu.Unlock()
		if w.WriteFrame(protocol.TypeStdinAck, protocol.EncodeStdinAck(uint32(len(b)))) != nil {
			return
		}
	}
}
