package agent

import (
	"errors"
	"io"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// threadConn reads a socket in the thread of the goroutine that reads it,
// waiting in poll(2), instead of through Go's poller. A session's frames
// are read this way, by a goroutine locked to its thread: while other
// sessions keep every thread of the agent busy relaying output, the
// kernel wakes that thread, which has slept and so is due to run, with the
// resize in hand, as it wakes the process sshd gives each session. Through
// the poller, the same frame waited for a thread that had run the relays
// (resize p50 1-4 ms under 16 streaming sessions, against 0.15 for sshd).
type threadConn struct {
	io.ReadWriteCloser
	rc syscall.RawConn

	closeOnce sync.Once
	closeErr  error
}

// newThreadConn returns c reading in its caller's thread when c is a
// socket, and c unchanged otherwise.
func newThreadConn(c io.ReadWriteCloser) io.ReadWriteCloser {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	socket := false
	rc.Control(func(fd uintptr) {
		_, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE)
		socket = err == nil
	})
	if !socket {
		return c
	}
	return &threadConn{ReadWriteCloser: c, rc: rc}
}

// Read waits for input in poll(2), in the calling thread.
func (t *threadConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var err error
	if cerr := t.rc.Read(func(fd uintptr) bool {
		for {
			n, err = unix.Read(int(fd), p)
			if err == unix.EINTR {
				continue
			}
			if err != unix.EAGAIN {
				return true
			}
			// A signal (Go's preemption among them) ends the wait
			// early; the loop reads again.
			unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, -1)
		}
	}); cerr != nil {
		return 0, cerr // closed
	}
	switch {
	case err != nil:
		return 0, err
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// Close shuts the socket down before closing it: a Read waiting in poll
// holds the descriptor open, and only the shutdown wakes it.
func (t *threadConn) Close() error {
	t.closeOnce.Do(func() {
		t.rc.Control(func(fd uintptr) { unix.Shutdown(int(fd), unix.SHUT_RDWR) })
		t.closeErr = t.ReadWriteCloser.Close()
	})
	return t.closeErr
}

// SetWriteDeadline bounds writes, when the socket supports deadlines.
func (t *threadConn) SetWriteDeadline(d time.Time) error {
	if wd, ok := t.ReadWriteCloser.(interface{ SetWriteDeadline(time.Time) error }); ok {
		return wd.SetWriteDeadline(d)
	}
	return errors.ErrUnsupported
}
