package protocol

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"unsafe"
)

// Type is a frame's type, the first byte of its header.
type Type uint8

// Frame types. The table in the package documentation gives each one's
// direction and payload.
const (
	TypeHello    Type = 0x01
	TypeExec     Type = 0x02
	TypeStarted  Type = 0x03
	TypePing     Type = 0x04
	TypePong     Type = 0x05
	TypeAttach   Type = 0x06
	TypeAttached Type = 0x07
	TypeList     Type = 0x08
	TypeSessions Type = 0x09
	TypeKill     Type = 0x0a
	TypeRemove   Type = 0x0b
	TypeDone     Type = 0x0c
	TypePeek     Type = 0x0d
	TypeSnapshot Type = 0x0e
	TypeStdin    Type = 0x10
	TypeStdinEOF Type = 0x11
	TypeStdout   Type = 0x12
	TypeStderr   Type = 0x13
	TypeStdinAck Type = 0x14
	TypeRestore  Type = 0x15
	TypeResize   Type = 0x20
	TypeSignal   Type = 0x21
	TypeExit     Type = 0x30
	TypeError    Type = 0x31
	TypeDetached Type = 0x32

	TypeCopyIn      Type = 0x16
	TypeCopyOut     Type = 0x17
	TypeCopyRoot    Type = 0x18
	TypeCopyEntry   Type = 0x19
	TypeCopyData    Type = 0x1a
	TypeCopyEnd     Type = 0x1b
	TypeCopyProblem Type = 0x1c
	TypeCopyDone    Type = 0x1d

	// Forwarding's frames lie outside ASCII: text sent to corkd by
	// mistake (an HTTP request) stays an unknown frame type.
	TypeForward       Type = 0x80
	TypeForwarding    Type = 0x81
	TypeStreamOpen    Type = 0x82
	TypeStreamOpened  Type = 0x83
	TypeStreamRefused Type = 0x84
	TypeStreamData    Type = 0x85
	TypeStreamAck     Type = 0x86
	TypeStreamEOF     Type = 0x87
	TypeStreamClose   Type = 0x88
	TypeListen        Type = 0x89
	TypeListening     Type = 0x8a
	TypePorts         Type = 0x8b
)

var typeNames = map[Type]string{
	TypeHello:    "hello",
	TypeExec:     "exec",
	TypeStarted:  "started",
	TypePing:     "ping",
	TypePong:     "pong",
	TypeAttach:   "attach",
	TypeAttached: "attached",
	TypeList:     "list",
	TypeSessions: "sessions",
	TypeKill:     "kill",
	TypeRemove:   "remove",
	TypeDone:     "done",
	TypePeek:     "peek",
	TypeSnapshot: "snapshot",
	TypeRestore:  "restore",
	TypeStdin:    "stdin",
	TypeStdinEOF: "stdin-eof",
	TypeStdout:   "stdout",
	TypeStderr:   "stderr",
	TypeStdinAck: "stdin-ack",
	TypeResize:   "resize",
	TypeSignal:   "signal",
	TypeExit:     "exit",
	TypeError:    "error",
	TypeDetached: "detached",

	TypeCopyIn:      "copy-in",
	TypeCopyOut:     "copy-out",
	TypeCopyRoot:    "copy-root",
	TypeCopyEntry:   "copy-entry",
	TypeCopyData:    "copy-data",
	TypeCopyEnd:     "copy-end",
	TypeCopyProblem: "copy-problem",
	TypeCopyDone:    "copy-done",

	TypeForward:       "forward",
	TypeForwarding:    "forwarding",
	TypeStreamOpen:    "stream-open",
	TypeStreamOpened:  "stream-opened",
	TypeStreamRefused: "stream-refused",
	TypeStreamData:    "stream-data",
	TypeStreamAck:     "stream-ack",
	TypeStreamEOF:     "stream-eof",
	TypeStreamClose:   "stream-close",
	TypeListen:        "listen",
	TypeListening:     "listening",
	TypePorts:         "ports",
}

// Known reports whether t is a frame type of this protocol.
func (t Type) Known() bool {
	_, ok := typeNames[t]
	return ok
}

func (t Type) String() string {
	if name, ok := typeNames[t]; ok {
		return name
	}
	return fmt.Sprintf("type 0x%02x", uint8(t))
}

const (
	// HeaderSize is the size of a frame header: type and length.
	HeaderSize = 5
	// MaxPayload is the largest payload a frame may carry.
	MaxPayload = 1 << 20
	// MaxPing is the largest Ping payload.
	MaxPing = 64
)

// Errors a Reader returns, wrapped with the details of the offending frame.
var (
	ErrTooLarge    = errors.New("frame too large")
	ErrUnknownType = errors.New("unknown frame type")
	ErrTruncated   = errors.New("frame cut off")
)

// PutHeader writes a frame header for a payload of n bytes into b[:HeaderSize].
// Writers of data frames read straight into b[HeaderSize:] and send b whole.
func PutHeader(b []byte, t Type, n int) {
	b[0] = byte(t)
	binary.BigEndian.PutUint32(b[1:HeaderSize], uint32(n))
}

// NewDataFrame returns a buffer for a data frame of up to n payload bytes,
// b[HeaderSize:] starting on a payloadAlign boundary: a sender reads its
// data straight there (the kernel copies into an aligned buffer several
// times faster than at an odd offset), sets the header with PutHeader and
// writes b whole.
func NewDataFrame(n int) []byte {
	// Only large allocations start on a page; a small one may start
	// anywhere a 16-byte size class puts it, so the offset is worked out.
	b := make([]byte, 2*payloadAlign+n)
	payload := uintptr(unsafe.Pointer(&b[0])) + payloadAlign
	off := payloadAlign - HeaderSize + int((payloadAlign-payload%payloadAlign)%payloadAlign)
	return b[off : off+HeaderSize+n : off+HeaderSize+n]
}

// Reader reads frames from a stream. It buffers, so that a header and a
// small payload cost one read, not two: the stream belongs to it.
type Reader struct {
	r      *bufio.Reader
	src    io.Reader // the stream under r
	hdr    [HeaderSize]byte
	limit  uint32
	check  func(Type, uint32) error // see SetCheck
	shared []byte                   // NextShared's buffer
}

// readBuffer is the Reader's buffer size: enough for a header and a small
// payload in one read, small enough that a large payload is mostly read
// straight into its own buffer rather than copied through this one, a
// copy that costs stdin throughput.
const readBuffer = 4 << 10

// NewReader returns a Reader reading frames from r.
func NewReader(r io.Reader) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, readBuffer), src: r, limit: MaxPayload}
}

// SetLimit lowers the largest payload r accepts below MaxPayload.
func (r *Reader) SetLimit(n int) {
	if n > 0 && n < MaxPayload {
		r.limit = uint32(n)
	}
}

// SetCheck has r call check with each frame's type and payload length
// once the header is read, before the payload is allocated or read: an
// error from check is r's error for the frame. A reader whose peer is not
// yet trusted charges each payload to a budget this way. A nil check
// removes it.
func (r *Reader) SetCheck(check func(Type, uint32) error) { r.check = check }

// Rest is the stream after the frames read so far, the bytes r has
// buffered first: for a relay that stops reading frames and copies the
// rest as it comes.
func (r *Reader) Rest() io.Reader { return r.r }

// Buffered returns the bytes r has read from the stream beyond the frames
// it returned, valid until its next read: for a reader that hands the
// stream on to another process, which must read them first.
func (r *Reader) Buffered() []byte {
	b, _ := r.r.Peek(r.r.Buffered())
	return b
}

// Next reads one frame and returns its type and a newly allocated payload.
// It returns io.EOF when the stream ends cleanly between frames, and an error
// wrapping ErrTruncated, ErrTooLarge or ErrUnknownType otherwise. The length is
// checked before the payload is allocated.
func (r *Reader) Next() (Type, []byte, error) {
	return r.next(nil)
}

// NextShared is Next with a payload that is only valid until the next call:
// its buffer is reused, so a reader that consumes each frame at once (the
// host writing output) allocates nothing per frame.
func (r *Reader) NextShared() (Type, []byte, error) {
	return r.next(&r.shared)
}

// NextInto is Next with the payload read into *buf, which it replaces
// with a larger buffer when the payload does not fit: a reader that hands
// payloads on keeps a pool of buffers instead of allocating one a frame.
func (r *Reader) NextInto(buf *[]byte) (Type, []byte, error) {
	return r.next(buf)
}

// NextCopying is NextShared, except that the payload of a frame of type
// copied goes to dst as it is read, and is not returned: the bytes r has
// buffered with a Write, the rest by io.Copy from the stream itself, so
// that a *os.File dst splices them from a socket in the kernel. n is how
// many payload bytes reached dst; a frame cut short, in the stream or at
// dst, returns the error with the bytes that did.
func (r *Reader) NextCopying(copied Type, dst io.Writer) (t Type, p []byte, n int64, err error) {
	t, size, err := r.header()
	if err != nil || t != copied {
		if err == nil {
			p, err = r.payload(&r.shared, t, size)
		}
		return t, p, 0, err
	}
	if b := min(r.r.Buffered(), int(size)); b > 0 {
		head, _ := r.r.Peek(b)
		m, err := dst.Write(head)
		r.r.Discard(m)
		if n = int64(m); err != nil {
			return t, nil, n, err
		}
	}
	m, err := io.Copy(dst, io.LimitReader(r.src, int64(size)-n))
	if n += m; err == nil && n < int64(size) {
		err = fmt.Errorf("protocol: %w: %s frame has %d of %d payload bytes", ErrTruncated, t, n, size)
	}
	return t, nil, n, err
}

func (r *Reader) next(buf *[]byte) (Type, []byte, error) {
	t, n, err := r.header()
	if err != nil {
		return 0, nil, err
	}
	p, err := r.payload(buf, t, n)
	return t, p, err
}

// header reads and checks a frame header: its type and payload length.
func (r *Reader) header() (Type, uint32, error) {
	if n, err := io.ReadFull(r.r, r.hdr[:]); err != nil {
		if err == io.EOF {
			return 0, 0, io.EOF
		}
		if err == io.ErrUnexpectedEOF {
			return 0, 0, fmt.Errorf("protocol: %w: header has %d of %d bytes", ErrTruncated, n, HeaderSize)
		}
		return 0, 0, err
	}
	t := Type(r.hdr[0])
	n := binary.BigEndian.Uint32(r.hdr[1:])
	if !t.Known() {
		return 0, 0, fmt.Errorf("protocol: %w 0x%02x (length %d)", ErrUnknownType, uint8(t), n)
	}
	if n > r.limit {
		return 0, 0, fmt.Errorf("protocol: %w: %s frame of %d bytes, the limit is %d", ErrTooLarge, t, n, r.limit)
	}
	if r.check != nil {
		if err := r.check(t, n); err != nil {
			return 0, 0, err
		}
	}
	return t, n, nil
}

// payload reads the n bytes of a t frame's payload into *buf (see
// payloadBuffer).
func (r *Reader) payload(buf *[]byte, t Type, n uint32) ([]byte, error) {
	p := r.payloadBuffer(buf, int(n))
	if got, err := io.ReadFull(r.r, p); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil, fmt.Errorf("protocol: %w: %s frame has %d of %d payload bytes", ErrTruncated, t, got, n)
		}
		return nil, err
	}
	return p, nil
}

// payloadAlign is the alignment of the bytes of a payload read straight
// from the stream: the kernel copies into an unaligned buffer several
// times slower, and those after the ones already buffered would otherwise
// start at an odd offset.
const payloadAlign = 64

// payloadBuffer returns n bytes for a payload: from *buf when it is large
// enough (a buffer made here replaces it), newly allocated when buf is nil.
// The bytes the stream gives after those already buffered start aligned.
func (r *Reader) payloadBuffer(buf *[]byte, n int) []byte {
	var b []byte
	if buf != nil {
		b = *buf
	}
	if cap(b) < n+payloadAlign {
		b = make([]byte, n+payloadAlign)
		if buf != nil {
			*buf = b
		}
	}
	b = b[:cap(b)]
	direct := uintptr(unsafe.Pointer(unsafe.SliceData(b))) + uintptr(r.r.Buffered())
	off := int((payloadAlign - direct%payloadAlign) % payloadAlign)
	return b[off : off+n : off+n]
}

// Writer writes frames to a stream. It is safe for concurrent use: each
// frame is written whole by one Write call, never interleaved with another.
type Writer struct {
	mu  sync.Mutex
	w   io.Writer
	buf []byte
}

// NewWriter returns a Writer writing frames to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// WriteFrame writes one frame.
func (w *Writer) WriteFrame(t Type, payload []byte) error {
	if len(payload) > MaxPayload {
		return fmt.Errorf("protocol: %w: %s frame of %d bytes, the limit is %d", ErrTooLarge, t, len(payload), MaxPayload)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.writeFrameLocked(t, payload)
}

// writeFrameLocked writes one frame in one Write; w is held.
func (w *Writer) writeFrameLocked(t Type, payload []byte) error {
	n := HeaderSize + len(payload)
	if cap(w.buf) < n {
		w.buf = make([]byte, n)
	}
	b := w.buf[:n]
	PutHeader(b, t, len(payload))
	copy(b[HeaderSize:], payload)
	_, err := w.w.Write(b)
	if cap(w.buf) > 64<<10 {
		w.buf = nil // keep no large buffer around after a big frame
	}
	return err
}

// WriteFrameOf writes the frame payload returns, produced while w is held:
// a sender whose frames must reach the stream in the order their payloads
// were chosen (latest-wins sizes) takes its payload and writes it as one
// step. Nothing is written when payload reports false.
func (w *Writer) WriteFrameOf(t Type, payload func() ([]byte, bool)) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.writeLocked(t, payload)
}

// TryWriteFrameOf is WriteFrameOf when w is free at once; it reports false,
// writing nothing, when another frame is being written.
func (w *Writer) TryWriteFrameOf(t Type, payload func() ([]byte, bool)) (bool, error) {
	if !w.mu.TryLock() {
		return false, nil
	}
	defer w.mu.Unlock()
	return true, w.writeLocked(t, payload)
}

func (w *Writer) writeLocked(t Type, payload func() ([]byte, bool)) error {
	p, ok := payload()
	if !ok {
		return nil
	}
	return w.writeFrameLocked(t, p)
}

// WriteFramed writes b, whole frames whose headers were set with
// PutHeader, in one Write. Data pumps use it to send output without
// copying it; a host uses it to send its hello and request together.
func (w *Writer) WriteFramed(b []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, err := w.w.Write(b)
	return err
}

// AppendJSON appends to b a frame whose payload is v encoded as JSON.
func AppendJSON(b []byte, t Type, v any) ([]byte, error) {
	p, err := encodeJSON(v)
	if err != nil {
		return b, err
	}
	b = append(b, make([]byte, HeaderSize)...)
	PutHeader(b[len(b)-HeaderSize:], t, len(p))
	return append(b, p...), nil
}

// WriteJSON writes a frame whose payload is v encoded as JSON.
func (w *Writer) WriteJSON(t Type, v any) error {
	p, err := encodeJSON(v)
	if err != nil {
		return err
	}
	return w.WriteFrame(t, p)
}
