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
// waiting in poll(2), instead of through Go's poller, once that goroutine
// made it its own (preferWakeups). A session's frames are read this way, by
// a goroutine locked to its thread: while other sessions keep every thread
// of the agent busy relaying output, the kernel wakes that thread, which
// has slept and so is due to run, with the resize in hand, as it wakes the
// process sshd gives each session. Through the poller, the same frame
// waited for a thread that had run the relays.
//
// Until then it reads through the poller: a thread waiting in poll(2) is a
// thread the Go runtime cannot use for anything else, and a connection not
// yet admitted to a session must not hold one, or idle connections would
// take corkd to the runtime's limit of threads, which is fatal.
type threadConn struct {
	io.ReadWriteCloser
	rc syscall.RawConn

	inThread bool // Read waits in its caller's thread: set by preferWakeups

	// The reading thread's scheduling, once preferWakeups made it the
	// session's own: only Read, in that thread, uses these.
	realtime   bool          // the thread may wait in SCHED_FIFO
	fifo       bool          // and is in it now
	unwaited   int           // reads since the thread last waited in poll
	streaming  bool          // the last frame read carried stdin (noteFrame)
	quietAfter time.Duration // how long a wait after stdin lasts before it is in SCHED_FIFO

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
	return &threadConn{ReadWriteCloser: c, rc: rc, quietAfter: quietAfter}
}

// Read waits for input in poll(2), in the calling thread, once the
// session's reader made the connection its own; through Go's poller
// before.
func (t *threadConn) Read(p []byte) (int, error) {
	if !t.inThread {
		return t.ReadWriteCloser.Read(p)
	}
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
				t.readWithoutWaiting()
				return true
			}
			t.wait(int(fd))
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

// closeHandedOver closes t's descriptor without shutting the socket down:
// another process serves it now. Until closed, the descriptor stays in
// Go's poller, which wakes for the other process's traffic too.
func (t *threadConn) closeHandedOver() {
	t.closeOnce.Do(func() { t.closeErr = t.ReadWriteCloser.Close() })
}

// SetWriteDeadline bounds writes, when the socket supports deadlines.
func (t *threadConn) SetWriteDeadline(d time.Time) error {
	if wd, ok := t.ReadWriteCloser.(interface{ SetWriteDeadline(time.Time) error }); ok {
		return wd.SetWriteDeadline(d)
	}
	return errors.ErrUnsupported
}

// A thread woken with a frame still waits for the CPU behind every thread
// of its scheduling group, and autogroup puts all of the agent's threads
// in one: an idle session's resize waited behind the relays of the
// sessions streaming output, where sshd's sessions are processes of their
// own. A thread in SCHED_FIFO runs as soon as it wakes, whatever group it
// is in.

// quietAfter is how long a wait that follows stdin data stays in
// SCHED_NORMAL before it turns to SCHED_FIFO: a stdin stream's frames come
// sooner than that, and a reader woken in SCHED_FIFO for each of them,
// switching policy twice a wait and preempting the program it fed, cost
// the agent more CPU for no more throughput. A wait after anything else, a
// resize among them, is in SCHED_FIFO from its start: a drag's resizes
// come less than a millisecond apart.
const quietAfter = time.Millisecond

// maxUnwaitedReads is how many reads in a row run in SCHED_FIFO: the one
// that ends a wait and brings the frame, and one more for a frame that
// arrives in two pieces. The next read that finds data waiting drops the
// thread to SCHED_NORMAL, so that a host that floods its connection, or
// sends burst after burst, gets at most a buffer's worth of frames handled
// ahead of the guest's other work per wait.
const maxUnwaitedReads = 2

// preferWakeups makes the calling thread, which must be locked to the
// session's reader and end with it, the one that waits for the
// connection's frames, and has it wait in SCHED_FIFO at the lowest
// priority (after stdin data, once the session has gone quiet). It
// reports false where the agent may not use SCHED_FIFO (no CAP_SYS_NICE
// and no RLIMIT_RTPRIO): the thread then waits as an ordinary one.
func (t *threadConn) preferWakeups() bool {
	t.inThread = true
	if setFIFO(true) != nil {
		return false
	}
	t.realtime, t.fifo = true, true
	return true
}

func (t *threadConn) readWithoutWaiting() {
	if !t.realtime {
		return
	}
	t.unwaited++
	if t.fifo && t.unwaited > maxUnwaitedReads && setFIFO(false) == nil {
		t.fifo = false
	}
}

// wait waits in poll(2) until fd is readable: in SCHED_FIFO, or after
// stdin data in SCHED_NORMAL for quietAfter first. A signal (Go's
// preemption among them) ends the wait early; the caller reads again
// either way.
func (t *threadConn) wait(fd int) {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if t.realtime {
		t.unwaited = 0
		if t.streaming {
			if t.fifo && setFIFO(false) == nil {
				t.fifo = false
			}
			if n, err := unix.Poll(fds, int(t.quietAfter.Milliseconds())); n != 0 || err != nil {
				return
			}
		}
		if !t.fifo && setFIFO(true) == nil {
			t.fifo = true
		}
	}
	unix.Poll(fds, -1)
}

// noteFrame tells the reader what the frame it read last carried: after
// stdin data, it waits for the next one in SCHED_NORMAL at first.
func (t *threadConn) noteFrame(stdin bool) { t.streaming = stdin }

// setFIFO puts the calling thread in SCHED_FIFO at priority 1 (on) or
// back in SCHED_NORMAL.
func setFIFO(on bool) error {
	attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_NORMAL}
	if on {
		attr.Policy, attr.Priority = unix.SCHED_FIFO, 1
	}
	return unix.SchedSetAttr(0, &attr, 0)
}
