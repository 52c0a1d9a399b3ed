package agent

import (
	"errors"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/corkvm/cork/protocol"
)

// output relays one of the program's output streams as frames.
type output struct {
	f *os.File
	t protocol.Type

	mu       sync.Mutex
	draining bool
	idle     time.Duration
	deadline time.Time
}

// dataFrameSize is the most output read into one frame. Output shares its
// direction only with acks and the exit, so it may be large.
const dataFrameSize = 128 << 10

// outputBufs pools pump's frame buffers: two of 128 KiB for every
// session, even one that prints nothing, made the heap grow by a quarter
// of a MiB per `cork exec -- true` and the collector run every few
// sessions.
var outputBufs = sync.Pool{New: func() any {
	b := protocol.NewDataFrame(dataFrameSize)
	return &b
}}

// pump reads output and hands it to deliver as whole frames until EOF (EIO
// for a PTY whose every slave is closed) or the end of draining. It reads
// whatever becomes of the frames, so that the program never waits on a host
// that has gone.
func (o *output) pump(deliver func(frame []byte)) {
	pooled := outputBufs.Get().(*[]byte)
	defer outputBufs.Put(pooled)
	buf := *pooled
	rc, rcErr := o.f.SyscallConn()
	own := false // whether the deadline in force is pump's own idle deadline
	for {
		o.mu.Lock()
		if o.draining {
			d := time.Now().Add(o.idle)
			if d.After(o.deadline) {
				d = o.deadline
			}
			o.f.SetReadDeadline(d)
			own = true
		}
		o.mu.Unlock()
		n, err := o.f.Read(buf[protocol.HeaderSize:])
		if n > 0 && err == nil && rcErr == nil {
			n += readMore(rc, buf[protocol.HeaderSize+n:])
		}
		if n > 0 {
			protocol.PutHeader(buf, o.t, n)
			deliver(buf[:protocol.HeaderSize+n])
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && !own {
				continue // startDrain's wake-up: read on under the idle deadline
			}
			return
		}
	}
}

// readMore appends whatever output is already waiting, without waiting
// for more: a program writing 4 KiB at a time then fills one frame with
// several writes instead of costing a frame, and a wake-up on each side,
// per write. Interactive output finds nothing waiting and goes at once.
func readMore(rc syscall.RawConn, b []byte) int {
	total := 0
	for total < len(b) {
		n := 0
		rc.Read(func(fd uintptr) bool {
			n, _ = syscall.Read(int(fd), b[total:])
			return true // never wait: EAGAIN means nothing more yet
		})
		if n <= 0 {
			break
		}
		total += n
	}
	return total
}

// startDrain tells a pump that the program is gone: read what is left, but
// stop after idle without output or at deadline. The deadline in the past
// wakes a pump blocked in Read so that it sets its own.
func (o *output) startDrain(idle time.Duration, deadline time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.draining, o.idle, o.deadline = true, idle, deadline
	o.f.SetReadDeadline(time.Now())
}
