package agent

import (
	"github.com/corkvm/cork/protocol"
)

// A kept session's output is a log addressed by byte number (the ring and
// the count of bytes so far): the program's output is appended to it under
// the session's lock, a memory operation; each client is a cursor into it
// with a goroutine of its own, its feed, that copies from the cursor to
// the connection without the lock and with a deadline on every write. So
// no client, however slow, makes the program or `cork ls` wait.

// feed copies the session's output to cl from its cursor until cl's part
// ends: its last frame sent (the exit, or the news that another client took
// the session over), its connection failed, or the client gone.
func (ss *session) feed(cl *client) {
	pooled := outputBufs.Get().(*[]byte)
	defer outputBufs.Put(pooled)
	buf := *pooled
	for {
		select {
		case <-cl.wake:
		case <-cl.gone:
			return
		}
		for {
			ss.outMu.Lock()
			n, behind := ss.takeOutputLocked(cl, buf[protocol.HeaderSize:])
			end := cl.end
			ss.outMu.Unlock()
			if behind {
				// More than the ring holds is waiting for it: it is cut
				// off, and a resume gets the screen instead.
				ss.log.Info("client fell behind the output kept; detaching it")
				ss.cutOff(cl)
				return
			}
			if n > 0 {
				protocol.PutHeader(buf, protocol.TypeStdout, n)
				if err := cl.w.WriteFramed(buf[:protocol.HeaderSize+n]); err != nil {
					ss.log.Info("client stopped reading; detaching it", "err", err)
					ss.cutOff(cl)
					return
				}
				continue
			}
			if end != nil {
				err := cl.last(end.t, end.v)
				if end.t == protocol.TypeExit {
					ss.gaveExit(err)
				}
				if end.atOnce {
					cl.conn.Close()
				}
				cl.leave()
				return
			}
			break
		}
	}
}

// takeOutputLocked copies into p the output cl has yet to get, from its
// cursor on, and moves the cursor past it; behind reports a cursor that
// fell behind the ring. Nothing for a client taken over. outMu is held.
func (ss *session) takeOutputLocked(cl *client, p []byte) (n int, behind bool) {
	if cl.end != nil && cl.end.atOnce {
		return 0, false
	}
	a, b, ok := ss.ring.since(cl.next)
	if !ok {
		return 0, true
	}
	n = copy(p, a)
	n += copy(p[n:], b)
	cl.next += uint64(n)
	return n, false
}

// cutOff detaches a client whose connection failed or who fell behind,
// without a last frame: it may resume.
func (ss *session) cutOff(cl *client) {
	cl.conn.Close()
	ss.detach(cl)
}
