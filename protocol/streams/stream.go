package streams

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/corkvm/cork/protocol"
)

// Stream is one stream of a Mux: an io.ReadWriteCloser with CloseWrite.
// Read takes what the peer sent, from a buffer the Mux fills up to the
// window; Write sends within the credit the peer gave.
type Stream struct {
	m  *Mux
	id uint32

	mu      sync.Mutex
	buf     bytes.Buffer
	held    uint32 // bytes received and not yet acknowledged: buffered, or read and owed
	ackOwed uint32 // of held, those read, which the next Read acknowledges (sendOwedAck)
	credit  uint32 // bytes this side may send
	given   uint32 // the peer's window: credit never exceeds it
	open    bool   // accepted: data may flow

	// direct is the local end Join joined the stream to, when it is a
	// socket: while Read waits (waiting), data goes there at once, from
	// the connection's reader, instead of waking Read to pass it on.
	direct  syscall.RawConn
	waiting bool

	// readable is signalled when what Read waits for changes (bytes, the
	// peer's EOF, an end), writable when what Write waits for does
	// (credit, an end): apart, so that an acknowledgement does not wake a
	// reader, nor data a writer, to find nothing to do.
	readable, writable sync.Cond

	// A stream this side opened has answered, closed with the peer's
	// answer; answerErr is nil, a *RefusedError, or the connection's end.
	answered  chan struct{}
	answerErr error
	refused   bool // a stream the peer opened that this side refused

	gotEOF, sentEOF     bool
	gotClose, sentClose bool
	err                 error // the connection's end, once it ended
	gone                bool  // off the connection: both closes done, or the connection ended
	release             func()

	// sendMu orders the stream's frames on the connection, so that
	// nothing follows its StreamClose (RFC 4254 section 5.3): an
	// acknowledgement racing the close would name a stream the peer has
	// forgotten. It is held for one frame's write, which has a deadline.
	sendMu    sync.Mutex
	closeSent bool
}

// send writes one frame of the stream, unless its StreamClose is sent.
func (s *Stream) send(t protocol.Type, f *protocol.StreamFrame) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.closeSent {
		return ErrClosed
	}
	s.closeSent = t == protocol.TypeStreamClose
	f.ID = s.id
	return s.m.send(t, f)
}

func (m *Mux) newStream(id, window uint32) *Stream {
	s := &Stream{m: m, id: id, credit: window, given: window}
	s.readable.L, s.writable.L = &s.mu, &s.mu
	return s
}

// accepted is the peer's StreamOpened for a stream this side opened. What
// was sent before it (early data) comes out of the window it gives.
func (s *Stream) accepted(window uint32) error {
	s.mu.Lock()
	sent := s.given - s.credit
	if s.answered == nil || s.open || window < sent {
		s.mu.Unlock()
		return fmt.Errorf("protocol: %s for stream %d, which is not waiting for one (or a window below the %d bytes sent)", protocol.TypeStreamOpened, s.id, sent)
	}
	s.open, s.credit, s.given = true, window-sent, window
	s.writable.Broadcast()
	s.mu.Unlock()
	s.tell(nil)
	return nil
}

// refusedByPeer is the peer's StreamRefused: the open failed with reason.
// With early data the stream's reads and writes end with it, and the peer,
// which discards the stream's frames meanwhile, is sent the StreamClose
// that frees its id, unless this side sent one already.
func (s *Stream) refusedByPeer(reason string) error {
	err := &RefusedError{Reason: reason}
	s.mu.Lock()
	waiting := s.answered != nil && !s.open
	closeNow := waiting && s.m.cfg.Early && !s.sentClose
	if waiting {
		s.err = err
		s.sentClose = s.sentClose || closeNow
		s.wake()
	}
	s.mu.Unlock()
	if !waiting {
		return fmt.Errorf("protocol: %s for stream %d, which is not waiting for an answer", protocol.TypeStreamRefused, s.id)
	}
	var sendErr error
	if closeNow {
		// Before the id is forgotten: a later open takes its place among
		// this side's streams, and must not reach the peer before the
		// close that frees the refused one there.
		if err := s.send(protocol.TypeStreamClose, &protocol.StreamFrame{}); err != nil && err != ErrClosed {
			sendErr = err
		}
	}
	s.m.forget(s.id)
	s.tell(err)
	return sendErr
}

// answerOpen accepts a stream the peer opened and sends StreamOpened, both
// under sendMu, so that a StreamClose this side sends in answer to the
// opener's can only follow it. It reports whether the opener closed the
// stream before the answer (early data).
func (s *Stream) answerOpen(window uint32) (closed bool, err error) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.mu.Lock()
	s.open = true
	closed = s.gotClose
	s.mu.Unlock()
	return closed, s.m.send(protocol.TypeStreamOpened, &protocol.StreamFrame{ID: s.id, Window: window})
}

// wake wakes Read and Write alike, for an end of the stream; s.mu is held.
func (s *Stream) wake() {
	s.readable.Broadcast()
	s.writable.Broadcast()
}

// Answer waits for the peer's answer to a stream this side opened: nil
// once it accepted the stream, a *RefusedError, or why the connection
// ended. For a stream the peer opened it is nil.
func (s *Stream) Answer() error {
	if s.answered == nil {
		return nil
	}
	<-s.answered
	return s.answerErr
}

// pendingEarly reports whether s is a stream the peer opened that is
// waiting for this side's answer while early data may come; s.mu is held.
func (s *Stream) pendingEarly() bool {
	return s.m.cfg.Early && s.answered == nil && !s.open
}

// RefusedError is Open's error when the peer refused the stream.
type RefusedError struct{ Reason string }

func (e *RefusedError) Error() string { return e.Reason }

// data buffers bytes from the peer, which must fit in the window.
func (s *Stream) data(p []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.refused:
		return nil // early data for a stream refused here: discarded
	case !(s.open || s.pendingEarly()) || s.gotEOF || s.gotClose:
		return fmt.Errorf("protocol: data on stream %d, which is not open for it", s.id)
	case !s.open && uint64(s.held)+uint64(len(p)) > protocol.EarlyWindow:
		return fmt.Errorf("protocol: stream %d sent more than its early window of %d bytes before its answer", s.id, protocol.EarlyWindow)
	case uint64(s.held)+uint64(len(p)) > uint64(s.m.cfg.Window):
		return fmt.Errorf("protocol: stream %d overran its window of %d bytes", s.id, s.m.cfg.Window)
	}
	s.held += uint32(len(p))
	if s.sentClose {
		return nil // closed here: the bytes have no reader, and are dropped
	}
	if s.waiting && s.direct != nil && s.buf.Len() == 0 {
		p = p[s.writeDirect(p):]
		if len(p) == 0 {
			if s.oweAck() {
				s.readable.Broadcast() // Read, woken, sends it
			}
			return nil
		}
	}
	s.buf.Write(p)
	s.readable.Broadcast()
	return nil
}

// writeDirect writes what the local end takes of p without waiting, and
// returns how much it took. Read is waiting, so nothing else writes
// there, and the bytes left over follow through the buffer, in order.
// s.mu is held.
func (s *Stream) writeDirect(p []byte) int {
	n := 0
	s.direct.Write(func(fd uintptr) bool {
		for n < len(p) {
			// MSG_DONTWAIT: never waits, even on a socket left blocking.
			w, err := syscall.SendmsgN(int(fd), p[n:], nil, nil, syscall.MSG_DONTWAIT)
			if err != nil || w <= 0 {
				break // full, or failing: Read's own write meets it
			}
			n += w
		}
		return true // never wait for the poller here
	})
	return n
}

// deliverEarly writes the early data that came with the open to local,
// just connected for it, when local is a socket that takes it at once:
// the request reaches the service before the answer to the open is sent
// and Join starts. What it does not take stays for Join, in order.
func (s *Stream) deliverEarly(local io.ReadWriteCloser) {
	rc, ok := rawSocket(local)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.buf.Len() == 0 || s.sentClose {
		return
	}
	s.direct = rc
	s.buf.Next(s.writeDirect(s.buf.Bytes()))
	// Bytes passed on here are read, as Read's are: a whole early window
	// given to a window of that size leaves the opener no credit, and
	// only this acknowledgement (sent by Join's first Read) frees it.
	s.oweAck()
}

// oweAck has the next Read acknowledge what has been read or passed on
// (received, and no longer buffered) once it comes to half the window: a
// peer waits for credit only with the whole window unacknowledged, so it
// is never left waiting on bytes already read, and a small request or
// reply costs no frame. It reports whether it did; s.mu is held.
func (s *Stream) oweAck() bool {
	read := s.held - uint32(s.buf.Len())
	if read < s.m.cfg.Window/2 {
		return false
	}
	s.ackOwed = read
	return true
}

// ack is the peer's StreamAck: n more bytes may be sent.
func (s *Stream) ack(n uint32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.open || uint64(s.credit)+uint64(n) > uint64(s.given) {
		return fmt.Errorf("protocol: stream %d acknowledged %d bytes it was not sent", s.id, n)
	}
	s.credit += n
	s.writable.Broadcast()
	return nil
}

func (s *Stream) eof() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refused {
		return nil
	}
	if !(s.open || s.pendingEarly()) || s.gotEOF {
		return fmt.Errorf("protocol: %s on stream %d, which is not open for it", protocol.TypeStreamEOF, s.id)
	}
	s.gotEOF = true
	s.readable.Broadcast()
	return nil
}

// peerClosed is the peer's StreamClose: it is answered with this side's,
// unless this side sent one already, and the stream is gone.
func (s *Stream) peerClosed() error {
	s.mu.Lock()
	switch {
	case s.refused: // refused here: the close frees the id
		s.mu.Unlock()
		s.m.undrain(s.id)
		return nil
	case s.pendingEarly() && !s.gotClose: // answered once connected (Mux.accept)
		s.gotClose = true
		s.mu.Unlock()
		return nil
	case !s.open:
		s.mu.Unlock()
		return fmt.Errorf("protocol: %s on stream %d, which was never accepted", protocol.TypeStreamClose, s.id)
	}
	s.gotClose = true
	reply := !s.sentClose
	s.sentClose = true
	s.wake()
	s.mu.Unlock()
	s.m.forget(s.id)
	if reply {
		if err := s.send(protocol.TypeStreamClose, &protocol.StreamFrame{}); err != nil && err != ErrClosed {
			return err
		}
	}
	return nil
}

// lost ends the stream with the connection.
func (s *Stream) lost(err error) {
	s.mu.Lock()
	s.err = err
	s.wake()
	s.mu.Unlock()
	if s.answered != nil {
		s.tell(err)
	}
	s.goneFromConn()
}

// WhenGone has release called once the stream is off the connection: when
// both sides have closed it, or the connection ended. That can be long
// after this side's Close, for a peer that never answers it, and until
// then the stream counts against MaxStreams: what a caller holds for the
// stream (a place among a user's streams) should be released here, not on
// Close. release runs at once when the stream is gone already; only one
// release is kept.
func (s *Stream) WhenGone(release func()) {
	s.mu.Lock()
	gone := s.gone
	if !gone {
		s.release = release
	}
	s.mu.Unlock()
	if gone {
		release()
	}
}

// goneFromConn runs the release WhenGone was given, once.
func (s *Stream) goneFromConn() {
	s.mu.Lock()
	release := s.release
	s.gone, s.release = true, nil
	s.mu.Unlock()
	if release != nil {
		release()
	}
}

// tell gives the stream its answer; only the first counts.
func (s *Stream) tell(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.answered:
	default:
		s.answerErr = err
		close(s.answered)
	}
}

// Read reads what the peer sent; io.EOF after the peer's half close.
func (s *Stream) Read(p []byte) (int, error) {
	s.sendOwedAck()
	s.mu.Lock()
	for s.buf.Len() == 0 && !s.gotEOF && !s.gotClose && !s.sentClose && s.err == nil {
		if s.ackOwed > 0 { // for bytes data wrote to the local end itself
			s.mu.Unlock()
			s.sendOwedAck()
			s.mu.Lock()
			continue
		}
		s.waiting = true
		s.readable.Wait()
		s.waiting = false
	}
	if s.buf.Len() == 0 {
		err := io.EOF
		if !s.gotEOF {
			err = s.closedErr()
		}
		s.mu.Unlock()
		return 0, err
	}
	n, _ := s.buf.Read(p)
	// The acknowledgement goes with the next Read, once the caller has
	// passed these bytes on: a reply is not held up behind the
	// acknowledgement of the request.
	s.oweAck()
	s.mu.Unlock()
	return n, nil
}

// sendOwedAck sends the acknowledgement the last Read decided on.
func (s *Stream) sendOwedAck() {
	s.mu.Lock()
	ack := s.ackOwed
	s.ackOwed, s.held = 0, s.held-ack
	s.mu.Unlock()
	if ack > 0 {
		s.send(protocol.TypeStreamAck, &protocol.StreamFrame{N: ack})
	}
}

// closedErr is the error of a stream that ended without the peer's EOF;
// s.mu is held.
func (s *Stream) closedErr() error {
	if s.err != nil && s.err != io.EOF {
		return s.err
	}
	return ErrClosed
}

// Write sends p within the credit the peer gives, in frames of at most
// protocol.MaxStreamData bytes. It waits while the peer's window is full.
func (s *Stream) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		s.mu.Lock()
		for s.credit == 0 && !s.sentEOF && !s.gotClose && !s.sentClose && s.err == nil {
			s.writable.Wait()
		}
		if s.sentEOF || s.gotClose || s.sentClose || s.err != nil {
			err := s.closedErr()
			s.mu.Unlock()
			return written, err
		}
		n := min(len(p), int(s.credit), protocol.MaxStreamData)
		s.credit -= uint32(n)
		s.mu.Unlock()
		if err := s.send(protocol.TypeStreamData, &protocol.StreamFrame{Data: p[:n]}); err != nil {
			return written, err
		}
		written += n
		p = p[n:]
	}
	return written, nil
}

// CloseWrite sends the peer EOF: it reads no more from this stream, and
// may go on sending.
func (s *Stream) CloseWrite() error {
	s.mu.Lock()
	if s.sentEOF || s.sentClose || s.err != nil {
		s.mu.Unlock()
		return nil
	}
	s.sentEOF = true
	s.writable.Broadcast()
	s.mu.Unlock()
	return s.send(protocol.TypeStreamEOF, &protocol.StreamFrame{})
}

// Close ends the stream both ways. The peer answers with its own close,
// which frees the stream's place on the connection.
func (s *Stream) Close() error {
	s.mu.Lock()
	if s.sentClose || s.err != nil {
		s.mu.Unlock()
		return nil
	}
	s.sentClose = true
	s.buf = bytes.Buffer{} // nothing reads it now: its memory goes before the peer answers
	s.wake()
	s.mu.Unlock()
	return s.send(protocol.TypeStreamClose, &protocol.StreamFrame{})
}

// finish sends the stream's half close and its close in one write, when
// neither is sent yet; otherwise it is Close.
func (s *Stream) finish() error {
	s.mu.Lock()
	if s.sentEOF || s.sentClose || s.err != nil {
		s.mu.Unlock()
		return s.Close()
	}
	s.sentEOF, s.sentClose = true, true
	s.buf = bytes.Buffer{}
	s.wake()
	s.mu.Unlock()
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.closeSent {
		return ErrClosed
	}
	s.closeSent = true
	return s.m.sendEnd(s.id)
}

// closeWriter is a local end that can be half closed (*net.TCPConn,
// *net.UnixConn, *Stream).
type closeWriter interface{ CloseWrite() error }

// Join copies between a stream and its local end, each direction in a
// goroutine of its own (the caller's carries the stream to the local
// end), and closes both once both directions have ended: whichever ends
// last closes, so nothing waits for the other. A direction's clean end is
// passed on as a half close; an error in either ends both at once, since
// a reset or a lost connection leaves nothing more to carry. Join returns
// when its caller's direction has ended.
func Join(s *Stream, local io.ReadWriteCloser, log func(string, ...any)) {
	j := &join{s: s, local: local, log: log}
	if rc, ok := rawSocket(local); ok {
		s.mu.Lock()
		s.direct = rc
		s.mu.Unlock()
	}
	go j.toStream()
	j.fromStream()
}

// join is a stream joined to its local end.
type join struct {
	s     *Stream
	local io.ReadWriteCloser
	log   func(string, ...any)

	mu    sync.Mutex
	ended int // directions ended, of two

	abortOnce sync.Once
}

// toStream carries the local end's bytes to the stream. When the local
// end's EOF comes last, the stream's half close and its close go in one
// write: the peer takes both in one wake.
func (j *join) toStream() {
	_, err := copyPooled(j.s, j.local)
	switch {
	case err != nil:
		j.abort(err)
	case j.endLast():
		j.s.finish()
		j.local.Close()
		return
	default:
		j.s.CloseWrite()
	}
	j.end()
}

// fromStream carries the stream's bytes to the local end. Its end is
// counted before the local end is half closed, so that the other
// direction, which may end on the answer to that, knows it ends last.
func (j *join) fromStream() {
	_, err := copyPooled(j.local, j.s)
	cw, ok := j.local.(closeWriter)
	switch {
	case err != nil:
		j.abort(err)
	case !ok:
		j.abort(errors.New("the local end cannot be half closed"))
	default:
		if !j.end() {
			cw.CloseWrite()
		}
		return
	}
	j.end()
}

// endLast ends a direction when the other has ended already, and reports
// whether it did: the caller then closes both ends.
func (j *join) endLast() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.ended != 1 {
		return false
	}
	j.ended = 2
	return true
}

// end ends a direction; the last to end closes both ends, and end
// reports whether it was.
func (j *join) end() bool {
	j.mu.Lock()
	j.ended++
	last := j.ended == 2
	j.mu.Unlock()
	if last {
		j.local.Close()
		j.s.Close()
	}
	return last
}

// abort closes both ends at once, after an error, and logs it unless it
// is the stream's own end.
func (j *join) abort(err error) {
	j.abortOnce.Do(func() {
		var refused *RefusedError
		if j.log != nil && !errors.Is(err, ErrClosed) && !errors.As(err, &refused) {
			j.log("stream ended early", "stream", j.s.id, "err", Clip(err.Error(), maxLogged))
		}
		j.local.Close()
		j.s.Close()
	})
}

// readWaiting reads into buf what local has received already, without
// waiting: nothing when it is no socket or has nothing yet. It reads only
// bytes the socket says it holds, so that an end or an error the socket
// has already is left for Join's first read to meet.
func readWaiting(local io.ReadWriteCloser, buf []byte) []byte {
	rc, ok := rawSocket(local)
	if !ok {
		return nil
	}
	n := 0
	rc.Read(func(fd uintptr) bool {
		queued := queuedBytes(int(fd))
		if queued <= 0 {
			return true
		}
		// MSG_DONTWAIT: never waits, even on a socket left blocking.
		r, _, err := unix.Recvfrom(int(fd), buf[:min(queued, len(buf))], unix.MSG_DONTWAIT)
		if err == nil && r > 0 {
			n = r
		}
		return true // never wait for the poller here
	})
	return buf[:n]
}

// RawSocket is a local end that is a socket underneath, and lets Join
// write to that socket without its Write: one that wraps a socket, as a
// connection counted against a quota does, and writes nothing else.
type RawSocket interface {
	RawSocket() (syscall.RawConn, error)
}

// rawSocket returns the socket Join may write local's bytes to directly:
// a TCP or unix connection's, or a RawSocket's. Any other Write, even one
// over such a connection, may do more than write, and is left alone.
func rawSocket(local io.ReadWriteCloser) (syscall.RawConn, bool) {
	var rc syscall.RawConn
	var err error
	switch c := local.(type) {
	case *net.TCPConn:
		rc, err = c.SyscallConn()
	case *net.UnixConn:
		rc, err = c.SyscallConn()
	case RawSocket:
		rc, err = c.RawSocket()
	default:
		return nil, false
	}
	return rc, err == nil
}

// copyBufs are Join's copy buffers. Each stream needs two, and a
// connection set up and ended per request would otherwise leave them to
// the collector every time.
var copyBufs = sync.Pool{New: func() any {
	b := make([]byte, protocol.MaxStreamData)
	return &b
}}

// copyPooled is io.Copy with a buffer from copyBufs. A stream is no
// socket a TCP or unix connection could splice to, so their ReadFrom and
// WriteTo, which would copy through a buffer of their own, are hidden.
func copyPooled(dst io.Writer, src io.Reader) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	return io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, *bp)
}
