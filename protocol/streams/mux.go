// Package streams carries byte streams on one protocol connection, after a
// Forward request: each stream has its own credit window and half close,
// either side opens them, and one whose consumer stalls holds back only
// itself. Both cork and corkd use it; its OS calls of its own never wait:
// a write of a stream's bytes to the socket Join joined it to, and a read
// of what a connection sent before its stream opened (OpenFor).
package streams

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/corkvm/cork/protocol"
)

// Config is one side's part of a Mux.
type Config struct {
	// Window is how many bytes of a stream this side buffers before its
	// consumer reads them: the credit it gives the peer per stream.
	Window uint32
	// MaxStreams bounds the streams open at once, opened by either side
	// (opens waiting for an answer included).
	MaxStreams int
	// Odd is whether this side's stream ids are odd (the host's) or even.
	Odd bool
	// Accept serves a stream the peer opens: it returns the local end to
	// join the stream to, or an error whose text the peer is told. It
	// runs in its own goroutine. Nil refuses every stream.
	Accept func(network uint8, address string) (io.ReadWriteCloser, error)
	// WriteTimeout bounds each frame's write to the connection: a peer
	// that stops reading loses the connection, never holds a writer.
	WriteTimeout time.Duration
	// Log, when set, is told why a stream ended early.
	Log func(msg string, args ...any)
	// Control, when set, takes the Listen, Listening and Ports frames, on the
	// connection's reader: it must not wait, and p is valid only until
	// it returns. An error ends the connection.
	Control func(t protocol.Type, p []byte) error
	// Early is whether both sides agreed to early data (Forward.EarlyData
	// and Forwarding.EarlyData): an opener sends up to
	// protocol.EarlyWindow bytes, its half close and its close before
	// the answer, and Open does not wait for it. Window must then be at
	// least protocol.EarlyWindow.
	Early bool
}

// Releaser is a local end that Config.Accept returns with something held
// for the stream, which it would release on its Close: TakeRelease hands
// that release to the Mux, which calls it once the stream is off the
// connection (see Stream.WhenGone), whenever the local end is closed.
type Releaser interface{ TakeRelease() func() }

// DefaultWriteTimeout is Config.WriteTimeout's default.
const DefaultWriteTimeout = 30 * time.Second

// Mux is the streams of one connection.
type Mux struct {
	cfg  Config
	conn io.ReadWriteCloser
	r    *protocol.Reader
	w    *protocol.Writer

	mu      sync.Mutex
	streams map[uint32]*Stream
	// draining holds the streams this side refused while early data may
	// still come for them: their frames are discarded until the opener's
	// StreamClose, and there are at most MaxStreams of them.
	draining map[uint32]struct{}
	nextID   uint32
	err      error // why the connection ended, once it has
	done     chan struct{}
}

// ErrClosed is a stream's error once the peer closed it, or once this
// side did.
var ErrClosed = errors.New("stream closed")

// MaxPayload is the largest frame payload a connection carrying streams
// needs, a full StreamData's; the control frames are far smaller. New
// lowers r's limit to it, so that a padded frame cannot make the
// connection keep a reading buffer of protocol.MaxPayload.
const MaxPayload = 4 + protocol.MaxStreamData

// New returns a Mux on conn, whose frames r reads and w writes (the hello
// and the Forward exchange are done). Run reads the connection.
func New(conn io.ReadWriteCloser, r *protocol.Reader, w *protocol.Writer, cfg Config) *Mux {
	r.SetLimit(MaxPayload)
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.Log == nil {
		cfg.Log = func(string, ...any) {}
	}
	m := &Mux{cfg: cfg, conn: conn, r: r, w: w, streams: map[uint32]*Stream{}, draining: map[uint32]struct{}{}, done: make(chan struct{})}
	if cfg.Odd {
		m.nextID = 1
	} else {
		m.nextID = 2
	}
	if d, ok := conn.(interface{ SetWriteDeadline(time.Time) error }); ok {
		m.w = protocol.NewWriter(&deadlineWriter{c: conn, d: d, timeout: cfg.WriteTimeout})
	}
	return m
}

// deadlineWriter gives every write its own deadline; the protocol.Writer
// above it writes one frame at a time, so the deadlines do not race.
type deadlineWriter struct {
	c       io.Writer
	d       interface{ SetWriteDeadline(time.Time) error }
	timeout time.Duration
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	d.d.SetWriteDeadline(time.Now().Add(d.timeout))
	return d.c.Write(p)
}

// Done is closed when the connection has ended.
func (m *Mux) Done() <-chan struct{} { return m.done }

// Err is why the connection ended, once Done is closed.
func (m *Mux) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// Close ends the connection and every stream on it.
func (m *Mux) Close() error {
	m.fail(errConnClosed)
	return nil
}

var errConnClosed = errors.New("connection closed")

// Run reads frames until the connection ends, and returns why (the first
// reason, when a stream's goroutine ended it): nil when the peer closed it
// cleanly. Every stream ends with it.
func (m *Mux) Run() error {
	for {
		t, p, err := m.r.NextShared()
		if err == nil {
			err = m.handle(t, p)
		}
		if err != nil {
			m.fail(err) // kept unless the connection ended for another reason first
			if err = m.Err(); err == io.EOF {
				return nil
			}
			return err
		}
	}
}

// fail ends the connection with err; the first error is kept.
func (m *Mux) fail(err error) {
	m.mu.Lock()
	if m.err != nil {
		m.mu.Unlock()
		return
	}
	m.err = err
	streams := m.streams
	m.streams = map[uint32]*Stream{}
	close(m.done)
	m.mu.Unlock()
	m.conn.Close()
	for _, s := range streams {
		s.lost(err)
	}
}

// handle acts on one frame. It never waits for a stream's consumer: data
// goes into the stream's buffer, bounded by the window this side gave.
func (m *Mux) handle(t protocol.Type, p []byte) error {
	if !t.IsStream() {
		if (t == protocol.TypeListen || t == protocol.TypeListening || t == protocol.TypePorts) && m.cfg.Control != nil {
			return m.cfg.Control(t, p)
		}
		return fmt.Errorf("protocol: %s on a connection that carries streams", t)
	}
	f, err := protocol.DecodeStream(t, p)
	if err != nil {
		return err
	}
	if t == protocol.TypeStreamOpen {
		return m.opened(&f)
	}
	m.mu.Lock()
	s := m.streams[f.ID]
	_, draining := m.draining[f.ID]
	m.mu.Unlock()
	if s == nil && draining {
		return m.drain(t, f.ID)
	}
	if s == nil {
		return fmt.Errorf("protocol: %s for stream %d, which is not open", t, f.ID)
	}
	switch t {
	case protocol.TypeStreamOpened:
		return s.accepted(f.Window)
	case protocol.TypeStreamRefused:
		return s.refusedByPeer(f.Reason)
	case protocol.TypeStreamData:
		return s.data(f.Data)
	case protocol.TypeStreamAck:
		return s.ack(f.N)
	case protocol.TypeStreamEOF:
		return s.eof()
	default: // TypeStreamClose
		return s.peerClosed()
	}
}

// opened takes a stream the peer opens: past MaxStreams it is refused at
// once, before anything is taken for it.
func (m *Mux) opened(f *protocol.StreamFrame) error {
	if (f.ID%2 == 1) == m.cfg.Odd {
		return fmt.Errorf("protocol: the peer opened stream %d, an id of this side's", f.ID)
	}
	m.mu.Lock()
	if _, draining := m.draining[f.ID]; draining || m.streams[f.ID] != nil {
		m.mu.Unlock()
		return fmt.Errorf("protocol: the peer opened stream %d, which is already open", f.ID)
	}
	if n := len(m.streams); n >= m.cfg.MaxStreams || m.cfg.Accept == nil {
		m.mu.Unlock()
		reason := fmt.Sprintf("at the limit of %d streams on one connection", m.cfg.MaxStreams)
		if m.cfg.Accept == nil {
			reason = "this side opens no streams"
		}
		return m.refuse(f.ID, reason)
	}
	s := m.newStream(f.ID, f.Window)
	m.streams[f.ID] = s
	m.mu.Unlock()
	go m.accept(s, f.Network, f.Address)
	return nil
}

// accept asks Config.Accept for the stream's local end and joins the two,
// or tells the peer why not.
func (m *Mux) accept(s *Stream, network uint8, address string) {
	local, err := m.cfg.Accept(network, address)
	if r, ok := local.(Releaser); ok && err == nil {
		if release := r.TakeRelease(); release != nil {
			s.WhenGone(release)
		}
	}
	if err != nil {
		m.cfg.Log("stream refused", "err", Clip(err.Error(), maxLogged))
		m.refuseStream(s, Clip(err.Error(), protocol.MaxStreamReason))
		return
	}
	s.deliverEarly(local)
	closed, err := s.answerOpen(m.cfg.Window)
	if err != nil {
		local.Close()
		return
	}
	if closed { // the opener closed it while it was connected: early data
		local.Close()
		m.forget(s.id)
		s.Close()
		return
	}
	Join(s, local, m.cfg.Log)
}

// refuseStream refuses s, a stream the peer opened that is waiting for
// its answer.
func (m *Mux) refuseStream(s *Stream, reason string) {
	m.mu.Lock()
	s.mu.Lock()
	s.refused = true
	closed := s.gotClose
	s.mu.Unlock()
	delete(m.streams, s.id)
	ok := closed || m.drainLocked(s.id)
	m.mu.Unlock()
	s.goneFromConn()
	m.answerRefused(s.id, ok, reason)
}

// refuse answers the peer's open of stream id, which this side does not
// keep, with StreamRefused.
func (m *Mux) refuse(id uint32, reason string) error {
	m.mu.Lock()
	ok := m.drainLocked(id)
	m.mu.Unlock()
	return m.answerRefused(id, ok, reason)
}

// drainLocked has the frames of stream id, which this side refuses, drained
// until the peer's StreamClose when early data may follow the open. It
// reports false when the peer already left as many refused streams
// unclosed as it may keep open. m.mu is held.
func (m *Mux) drainLocked(id uint32) bool {
	if !m.cfg.Early {
		return true
	}
	if len(m.draining) >= m.cfg.MaxStreams {
		return false
	}
	m.draining[id] = struct{}{}
	return true
}

// answerRefused sends StreamRefused for id, or, when its frames could not
// be drained, ends the connection.
func (m *Mux) answerRefused(id uint32, drained bool, reason string) error {
	if !drained {
		err := fmt.Errorf("protocol: the peer left %d refused streams unclosed", m.cfg.MaxStreams)
		m.fail(err)
		return err
	}
	return m.send(protocol.TypeStreamRefused, &protocol.StreamFrame{ID: id, Reason: reason})
}

// drain takes a frame for a stream this side refused (early data):
// data and a half close are discarded, the peer's StreamClose frees the
// id.
func (m *Mux) drain(t protocol.Type, id uint32) error {
	switch t {
	case protocol.TypeStreamData, protocol.TypeStreamEOF:
		return nil
	case protocol.TypeStreamClose:
		m.undrain(id)
		return nil
	}
	return fmt.Errorf("protocol: %s for stream %d, which was refused", t, id)
}

func (m *Mux) undrain(id uint32) {
	m.mu.Lock()
	delete(m.draining, id)
	m.mu.Unlock()
}

// maxLogged bounds the text of a peer's that goes into one log line (an
// address, an error naming one).
const maxLogged = 256

// Clip returns s as valid UTF-8 of at most n bytes, cut on a rune
// boundary: a peer's reason or address fit for a frame that must be
// UTF-8, or for a log line.
func Clip(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// Open opens a stream to address on the peer's side and waits for the
// answer: the stream, or an error carrying the peer's reason. With early
// data (Config.Early) it returns at once: the stream takes writes before
// the answer, and its Read, Write and Answer report a refusal.
func (m *Mux) Open(network uint8, address string) (*Stream, error) {
	return m.open(network, address, nil)
}

// OpenFor is Open for local, a connection this side accepted, which the
// caller then joins to the stream (Join). With early data, what local has
// sent already goes with the open, in the same write: the peer's side
// has the request as soon as it has connected, and a request and its
// open cost the peer one wake, not two.
func (m *Mux) OpenFor(network uint8, address string, local io.ReadWriteCloser) (*Stream, error) {
	if !m.cfg.Early {
		return m.open(network, address, nil)
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	return m.open(network, address, readWaiting(local, (*bp)[:min(len(*bp), protocol.EarlyWindow)]))
}

// open opens a stream, sending first, early data, with the open.
func (m *Mux) open(network uint8, address string, first []byte) (*Stream, error) {
	m.mu.Lock()
	if m.err != nil {
		m.mu.Unlock()
		return nil, m.err
	}
	if len(m.streams) >= m.cfg.MaxStreams {
		m.mu.Unlock()
		return nil, fmt.Errorf("at the limit of %d streams on one connection", m.cfg.MaxStreams)
	}
	id := m.nextID
	m.nextID += 2
	var early uint32
	if m.cfg.Early {
		early = protocol.EarlyWindow
	}
	s := m.newStream(id, early)
	s.credit -= uint32(len(first)) // nothing else sends on s before open returns
	s.answered = make(chan struct{})
	m.streams[id] = s
	m.mu.Unlock()
	err := m.sendOpen(&protocol.StreamFrame{ID: id, Window: m.cfg.Window, Network: network, Address: address}, first)
	if err != nil {
		m.forget(id)
		return nil, err
	}
	if m.cfg.Early {
		return s, nil
	}
	if err := s.Answer(); err != nil {
		return nil, err
	}
	return s, nil
}

// sendOpen writes a StreamOpen and, when there is early data, a StreamData
// behind it, in one write.
func (m *Mux) sendOpen(f *protocol.StreamFrame, first []byte) error {
	if len(first) == 0 {
		return m.write(typed{protocol.TypeStreamOpen, f})
	}
	return m.write(typed{protocol.TypeStreamOpen, f}, typed{protocol.TypeStreamData, &protocol.StreamFrame{ID: f.ID, Data: first}})
}

// sendEnd writes stream id's StreamEOF and StreamClose in one write.
func (m *Mux) sendEnd(id uint32) error {
	return m.write(typed{protocol.TypeStreamEOF, &protocol.StreamFrame{ID: id}}, typed{protocol.TypeStreamClose, &protocol.StreamFrame{ID: id}})
}

// send writes one stream frame.
func (m *Mux) send(t protocol.Type, f *protocol.StreamFrame) error {
	return m.write(typed{t, f})
}

// typed is a stream frame with its type.
type typed struct {
	t protocol.Type
	f *protocol.StreamFrame
}

// write writes frames in one write; a failure ends the connection.
func (m *Mux) write(frs ...typed) error {
	bp := frames.Get().(*[]byte)
	defer frames.Put(bp)
	*bp = (*bp)[:0]
	for _, fr := range frs {
		*bp = protocol.AppendStream(*bp, fr.t, fr.f)
	}
	if err := m.w.WriteFramed(*bp); err != nil {
		m.fail(fmt.Errorf("writing %s: %w", frs[0].t, err))
		return err
	}
	return nil
}

// frames are the buffers frames are written from: a data frame each
// would otherwise be an allocation of its size.
var frames = sync.Pool{New: func() any {
	b := make([]byte, 0, protocol.HeaderSize+8+protocol.MaxStreamData)
	return &b
}}

// WriteJSON writes a control frame (Listen, Listening).
func (m *Mux) WriteJSON(t protocol.Type, v any) error {
	if err := m.w.WriteJSON(t, v); err != nil {
		m.fail(fmt.Errorf("writing %s: %w", t, err))
		return err
	}
	return nil
}

// forget drops stream id: the count of open streams goes down, and what
// was held for it is released.
func (m *Mux) forget(id uint32) {
	m.mu.Lock()
	s := m.streams[id]
	delete(m.streams, id)
	m.mu.Unlock()
	if s != nil {
		s.goneFromConn()
	}
}

// Streams reports how many streams are open now.
func (m *Mux) Streams() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.streams)
}
