package listen

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/corkvm/cork/protocol"
)

// serialPoll is how long a serial listener waits before reading again
// while no host is connected: a virtio-serial port then reads end-of-file
// at once, and poll reports it hung up, so waiting is the only way not to
// spin.
const serialPoll = 100 * time.Millisecond

// maxHello bounds the hello a serial listener resynchronises on.
const maxHello = 4096

func listenSerial(path string, opts Options) (net.Listener, error) {
	f, err := os.OpenFile(path, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	return newSerialListener(f, path, opts.Logger), nil
}

// serialListener serves sessions one after another on one stream, a
// virtio-serial port. It alone reads the stream and hands each session its
// frames; a session starts at a hello. Frames left over from an ended
// session and garbage are skipped up to the next plausible hello, so a
// broken session leaves the port usable for the next one.
type serialListener struct {
	port io.ReadWriteCloser
	name string
	log  *slog.Logger
	br   *bufio.Reader

	accept chan *serialConn
	done   chan struct{}
	once   sync.Once
	wmu    sync.Mutex // one frame at a time on the port
}

var (
	_ net.Listener = (*serialListener)(nil)
	_ net.Conn     = (*serialConn)(nil)
)

func newSerialListener(port io.ReadWriteCloser, name string, log *slog.Logger) *serialListener {
	l := &serialListener{port: port, name: name, log: log, br: bufio.NewReaderSize(port, 64<<10),
		accept: make(chan *serialConn), done: make(chan struct{})}
	go l.pump()
	return l
}

func (l *serialListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.accept:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *serialListener) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.port.Close()
	})
	return nil
}

func (l *serialListener) Addr() net.Addr { return serialAddr(l.name) }

func (l *serialListener) closed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

func (l *serialListener) pump() {
	r := protocol.NewReader(l.br)
	var cur *serialConn
	for !l.closed() {
		if cur == nil && !l.syncToHello() {
			return
		}
		t, p, err := r.Next()
		if err != nil {
			if cur != nil {
				cur.hostGone()
				cur = nil
			}
			if l.closed() {
				return
			}
			if errors.Is(err, io.EOF) || errors.Is(err, protocol.ErrTruncated) {
				time.Sleep(serialPoll) // the host went away; wait for the next
			} else {
				l.log.Warn("garbled serial stream; waiting for the next hello", "port", l.name, "err", err)
			}
			continue
		}
		if cur != nil && cur.deliver(t, p) {
			continue
		}
		cur = nil
		if t != protocol.TypeHello {
			continue // left over from a session that has ended
		}
		cur = newSerialConn(l)
		select {
		case l.accept <- cur:
		case <-l.done:
			return
		}
		cur.deliver(t, p)
	}
}

// syncToHello skips bytes up to what looks like a hello frame's start. It
// waits while the port reads end-of-file (no host) and returns false when
// the listener is closed.
func (l *serialListener) syncToHello() bool {
	skipped := 0
	for !l.closed() {
		b, err := l.br.Peek(protocol.HeaderSize + 1)
		if err != nil {
			if errors.Is(err, io.EOF) {
				time.Sleep(serialPoll)
				continue
			}
			if l.closed() {
				return false
			}
			l.log.Warn("reading serial port", "port", l.name, "err", err)
			time.Sleep(serialPoll)
			continue
		}
		n := uint32(b[1])<<24 | uint32(b[2])<<16 | uint32(b[3])<<8 | uint32(b[4])
		if protocol.Type(b[0]) == protocol.TypeHello && n <= maxHello && b[5] == '{' {
			if skipped > 0 {
				l.log.Warn("skipped bytes before a hello", "port", l.name, "bytes", skipped)
			}
			return true
		}
		l.br.Discard(1)
		skipped++
	}
	return false
}

// serialConn is one session on a serial listener: frames come from the
// listener's pump, writes go to the port until the session ends.
type serialConn struct {
	l      *serialListener
	pr     *io.PipeReader
	pw     *io.PipeWriter
	mu     sync.Mutex
	closed bool
}

func newSerialConn(l *serialListener) *serialConn {
	pr, pw := io.Pipe()
	return &serialConn{l: l, pr: pr, pw: pw}
}

// deliver passes one frame to the session; false when the session has
// ended.
func (c *serialConn) deliver(t protocol.Type, p []byte) bool {
	b := make([]byte, protocol.HeaderSize+len(p))
	protocol.PutHeader(b, t, len(p))
	copy(b[protocol.HeaderSize:], p)
	_, err := c.pw.Write(b)
	return err == nil
}

// hostGone ends the session's input as a dropped connection does, and
// stops its writes: whatever it still says belongs to no host.
func (c *serialConn) hostGone() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.pw.CloseWithError(io.EOF)
}

func (c *serialConn) Read(p []byte) (int, error) { return c.pr.Read(p) }

// StopInput ends the frames handed to this session, so that the next
// host's hello, which may follow this session's last frame at once, goes
// to a new session (agent.InputStopper).
func (c *serialConn) StopInput() { c.pr.Close() }

func (c *serialConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return 0, net.ErrClosed
	}
	c.l.wmu.Lock()
	defer c.l.wmu.Unlock()
	return c.l.port.Write(p)
}

func (c *serialConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	return c.pr.Close()
}

func (c *serialConn) LocalAddr() net.Addr                { return serialAddr(c.l.name) }
func (c *serialConn) RemoteAddr() net.Addr               { return serialAddr(c.l.name) }
func (c *serialConn) SetDeadline(t time.Time) error      { return errNoDeadline }
func (c *serialConn) SetReadDeadline(t time.Time) error  { return errNoDeadline }
func (c *serialConn) SetWriteDeadline(t time.Time) error { return errNoDeadline }

var errNoDeadline = errors.New("serial session: deadlines not supported")

type serialAddr string

func (a serialAddr) Network() string { return "serial" }
func (a serialAddr) String() string  { return string(a) }
