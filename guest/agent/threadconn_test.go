package agent

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corkvm/cork/protocol/prototest"
)

// TestThreadConnReads: a socket read in the caller's thread gives the
// bytes sent, in order, then EOF when the peer closes.
func TestThreadConnReads(t *testing.T) {
	server, client := prototest.SocketPair(t)
	c := newThreadConn(server)
	defer c.Close()
	if _, ok := c.(*threadConn); !ok {
		t.Fatalf("a unix socket was not wrapped: %T", c)
	}
	go func() {
		for i := range 100 {
			client.Write([]byte{byte(i)})
			time.Sleep(100 * time.Microsecond)
		}
		client.Close()
	}()
	type result struct {
		got []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the test
		c.(*threadConn).preferWakeups()
		got, err := io.ReadAll(c)
		done <- result{got, err}
	}()
	r := <-done
	got, err := r.got, r.err
	if err != nil || len(got) != 100 {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	for i, b := range got {
		if b != byte(i) {
			t.Fatalf("byte %d is %d", i, b)
		}
	}
}

// TestThreadConnCloseEndsRead: closing the connection ends a Read waiting
// in poll, which holds the descriptor open.
func TestThreadConnCloseEndsRead(t *testing.T) {
	server, _ := prototest.SocketPair(t) // the peer writes nothing
	c := newThreadConn(server)
	tids, done := make(chan int, 1), make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the test
		c.(*threadConn).preferWakeups()
		tids <- unix.Gettid()
		_, err := c.Read(make([]byte, 10))
		done <- err
	}()
	waitInPoll(t, <-tids)
	c.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Read after Close returned no error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Read still waiting 10s after Close")
	}
}

// TestThreadConnLeavesOthers: what is not a socket is read as before.
func TestThreadConnLeavesOthers(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if c := newThreadConn(r); c != io.ReadWriteCloser(r) {
		t.Fatalf("a pipe was wrapped: %T", c)
	}
}

// schedPolicy is thread tid's scheduling policy, from /proc; -1 if it
// cannot be read.
func schedPolicy(tid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/stat", tid))
	if err != nil {
		return -1
	}
	// Fields after the command name, which may hold spaces; policy is
	// field 41 of proc(5), the 39th after the name.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 39 {
		return -1
	}
	p, err := strconv.Atoi(f[38])
	if err != nil {
		return -1
	}
	return p
}

// TestThreadConnWaitsInFIFO: the session's reader waits for frames in
// SCHED_FIFO, drops to SCHED_NORMAL after maxUnwaitedReads reads that
// found data waiting (a flooding host gets no priority), and is in
// SCHED_FIFO again once it has waited.
func TestThreadConnWaitsInFIFO(t *testing.T) {
	server, client := prototest.SocketPair(t)
	c := newThreadConn(server).(*threadConn)
	defer c.Close()
	const queued = 2 * maxUnwaitedReads
	client.Write(make([]byte, queued))

	type report struct {
		tid                       int
		allowed                   bool
		start, flooded, afterWait int
	}
	tids, drained, done := make(chan int, 1), make(chan struct{}), make(chan report, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the test
		r := report{tid: unix.Gettid()}
		tids <- r.tid
		if r.allowed = c.preferWakeups(); !r.allowed {
			close(drained)
			done <- r
			return
		}
		r.start = schedPolicy(r.tid)
		one := make([]byte, 1)
		for range maxUnwaitedReads + 1 {
			c.Read(one)
		}
		r.flooded = schedPolicy(r.tid)
		for range queued - maxUnwaitedReads - 1 {
			c.Read(one)
		}
		close(drained)
		c.Read(one) // waits: nothing is queued
		r.afterWait = schedPolicy(r.tid)
		done <- r
	}()
	tid := <-tids
	<-drained
	// The reader is about to wait, or waiting, once it is back in FIFO.
	deadline := time.Now().Add(10 * time.Second)
	for schedPolicy(tid) != unix.SCHED_FIFO {
		select {
		case r := <-done:
			t.Skipf("this process may not use SCHED_FIFO (allowed: %v)", r.allowed)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the reader did not go back to SCHED_FIFO to wait")
		}
		time.Sleep(time.Millisecond)
	}
	client.Write([]byte{1})
	r := <-done
	if r.start != unix.SCHED_FIFO || r.flooded != unix.SCHED_NORMAL || r.afterWait != unix.SCHED_FIFO {
		t.Fatalf("policies: at start %d, after %d reads without waiting %d, after a wait %d (FIFO is %d, NORMAL %d)",
			r.start, maxUnwaitedReads+1, r.flooded, r.afterWait, unix.SCHED_FIFO, unix.SCHED_NORMAL)
	}
}

// TestThreadConnWaitsInNormalAfterStdin: after a stdin frame the reader
// waits in SCHED_NORMAL (a stream's next frame is due), after any other
// frame in SCHED_FIFO from the start of the wait.
func TestThreadConnWaitsInNormalAfterStdin(t *testing.T) {
	server, client := prototest.SocketPair(t)
	c := newThreadConn(server).(*threadConn)
	defer c.Close()
	c.quietAfter = time.Hour // the wait after stdin never turns to FIFO here

	tids, reads := make(chan int, 1), make(chan bool, 2)
	allowed := make(chan bool, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the test
		tids <- unix.Gettid()
		ok := c.preferWakeups()
		allowed <- ok
		if !ok {
			return
		}
		one := make([]byte, 1)
		for _, stdin := range []bool{true, false} {
			c.noteFrame(stdin)
			_, err := c.Read(one) // waits: nothing is queued
			reads <- err == nil
		}
	}()
	tid := <-tids
	if !<-allowed {
		t.Skip("this process may not use SCHED_FIFO")
	}
	for _, want := range []int{unix.SCHED_NORMAL, unix.SCHED_FIFO} {
		waitInPoll(t, tid)
		if got := schedPolicy(tid); got != want {
			t.Fatalf("waiting after a frame: policy %d, want %d (FIFO is %d, NORMAL %d)", got, want, unix.SCHED_FIFO, unix.SCHED_NORMAL)
		}
		client.Write([]byte{1})
		if !<-reads {
			t.Fatal("read failed")
		}
	}
}

// waitInPoll returns once the thread tid sleeps in poll(2): its wchan
// names poll, or, where the kernel does not tell (wchan "0"), it sleeps,
// and the thread's next blocking call is the poll.
func waitInPoll(t *testing.T, tid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		wchan, _ := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/wchan", tid))
		if strings.Contains(string(wchan), "poll") {
			return
		}
		if w := strings.TrimSpace(string(wchan)); w == "0" || w == "" {
			stat, _ := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/stat", tid))
			if f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:])); len(f) > 0 && f[0] == "S" {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("thread %d is not waiting in poll (wchan %q)", tid, wchan)
		}
		time.Sleep(time.Millisecond)
	}
}
