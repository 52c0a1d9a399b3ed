package agent

import (
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
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
//
// The socket is taken out of Go's poller altogether, and writes wait for
// room in poll(2) too. In the poller's epoll set, every frame that
// arrives wakes the poller's thread as well as the reader, and every read
// of the host wakes it again for the room it made: a second wakeup, on
// the resize's path, for nothing. Taken out, the resize p50 was 5-15%
// lower in 5 of 6 alternations with the agent left in (a control of the
// agent against itself spread 0.95-1.14), and a stdin stream cost the
// agent about 5% less CPU (lower in 8 of 10 alternations).
type threadConn struct {
	fd int
	// inUse is held shared by each read and write for its system calls,
	// and by Close alone to close fd, so that fd is never closed, and
	// its number reused, under one of them.
	inUse     sync.RWMutex
	closed    atomic.Bool
	writeDead atomic.Int64 // the write deadline in Unix nanoseconds; 0: none

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

// newThreadConn returns c as a threadConn when c is a socket, and c
// unchanged otherwise. A threadConn holds a descriptor of its own for the
// socket and closes c.
func newThreadConn(c io.ReadWriteCloser) io.ReadWriteCloser {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	fd := -1
	rc.Control(func(orig uintptr) {
		if _, err := unix.GetsockoptInt(int(orig), unix.SOL_SOCKET, unix.SO_TYPE); err != nil {
			return // not a socket
		}
		// The copy shares the socket and its O_NONBLOCK; closing c
		// then takes the socket out of the poller.
		fd, _ = unix.FcntlInt(orig, unix.F_DUPFD_CLOEXEC, 0)
	})
	if fd < 0 {
		return c
	}
	c.Close()
	return &threadConn{fd: fd, quietAfter: quietAfter}
}

// Read waits for input in poll(2), in the calling thread.
func (t *threadConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	t.inUse.RLock()
	defer t.inUse.RUnlock()
	for {
		if t.closed.Load() {
			return 0, net.ErrClosed
		}
		n, err := unix.Read(t.fd, p)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			t.wait(t.fd)
			continue
		}
		t.readWithoutWaiting()
		switch {
		case err != nil:
			return 0, os.NewSyscallError("read", err)
		case n == 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

// Write writes all of p, waiting in poll(2) for room while the socket is
// full, until the write deadline if one is set. A write that waits holds
// its thread, as the session's reader does: a session has at most one
// writer at a time (protocol.Writer), so MaxSessions bounds them.
func (t *threadConn) Write(p []byte) (int, error) {
	t.inUse.RLock()
	defer t.inUse.RUnlock()
	n := 0
	for n < len(p) {
		if t.closed.Load() {
			return n, net.ErrClosed
		}
		m, err := unix.Write(t.fd, p[n:])
		if m > 0 {
			n += m
		}
		switch {
		case err == nil || err == unix.EINTR:
		case err == unix.EAGAIN:
			timeout := -1
			if d := t.writeDead.Load(); d != 0 {
				left := time.Until(time.Unix(0, d))
				if left <= 0 {
					return n, os.ErrDeadlineExceeded
				}
				timeout = int(left.Milliseconds()) + 1
			}
			unix.Poll([]unix.PollFd{{Fd: int32(t.fd), Events: unix.POLLOUT}}, timeout)
		default:
			return n, os.NewSyscallError("write", err)
		}
	}
	return n, nil
}

// Close shuts the socket down, which ends the reads and writes waiting in
// poll, then closes it once they have returned.
func (t *threadConn) Close() error {
	t.closeOnce.Do(func() {
		t.closed.Store(true)
		unix.Shutdown(t.fd, unix.SHUT_RDWR)
		t.inUse.Lock()
		t.closeErr = unix.Close(t.fd)
		t.inUse.Unlock()
	})
	return t.closeErr
}

// SetWriteDeadline bounds the writes that wait for room; the zero time
// removes the bound.
func (t *threadConn) SetWriteDeadline(d time.Time) error {
	if d.IsZero() {
		t.writeDead.Store(0)
	} else {
		t.writeDead.Store(d.UnixNano())
	}
	return nil
}

// A thread woken with a frame still waits for the CPU behind every thread
// of its scheduling group, and autogroup puts all of the agent's threads
// in one: with 16 sessions streaming output through the agent, an idle
// session's resize waited behind their relays (p99 4-5 ms, against about
// 1 ms through sshd, whose sessions are processes of their own). A thread
// in SCHED_FIFO runs as soon as it wakes, whatever group it is in.
//
// A wait that follows stdin data starts in SCHED_NORMAL and turns to
// SCHED_FIFO only once it has lasted quietAfter: a stdin stream's frames
// come sooner than that, and a reader that woke in SCHED_FIFO for each of
// them, switching policy twice a wait and preempting the program it fed,
// cost the agent 10-25% more CPU (1 GiB into cat, 13 alternations:
// 104-204 clock ticks so, 108-171 with this wait; 434-762 against 486-754
// MiB/s). A wait after anything else, a resize among them, is in
// SCHED_FIFO from its start: a drag's resizes come less than a
// millisecond apart.
const quietAfter = time.Millisecond

// Only the reads that end a wait run in SCHED_FIFO: the one that brings
// the frame, and one more for a frame that arrives in two pieces. A third
// read in a row that finds data waiting drops the thread to SCHED_NORMAL,
// so that a host that floods its connection, or sends burst after burst,
// gets at most a buffer's worth of frames handled ahead of the guest's
// other work per wait.
const maxUnwaitedReads = 2

// preferWakeups makes the calling thread, which must be locked to the
// session's reader and end with it, wait for frames in SCHED_FIFO at the
// lowest priority (after stdin data, once the session has gone quiet).
// It reports false, and changes nothing, where the agent may not (no
// CAP_SYS_NICE and no RLIMIT_RTPRIO).
func (t *threadConn) preferWakeups() bool {
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
