package term

import (
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/corkvm/cork/protocol"
)

// The tests run as cork does: the main goroutine on the main thread,
// serving Main.
func init() { runtime.LockOSThread() }

func TestMain(m *testing.M) { os.Exit(Main(m.Run)) }

// TestWatchSizeEndsAtTheNewestSize: as in WatchSize, a burst of size changes, each
// signalled to the process, is read by the main thread's wait and by
// os/signal at once; the sizes put never go back and the last one is the
// terminal's final size.
func TestWatchSizeEndsAtTheNewestSize(t *testing.T) {
	master, slave, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	defer slave.Close()

	var mu sync.Mutex
	var seen []protocol.WindowSize
	put := func(s protocol.WindowSize) {
		mu.Lock()
		seen = append(seen, s)
		mu.Unlock()
	}
	stop := make(chan struct{})
	defer close(stop)
	wakes := winchWakes.Load()
	w := &sizeWatch{fd: int(slave.Fd()), put: put}
	notifyWinch(w, stop)
	takeMainThread(t, w, stop)

	// First a size at a time, until one is read on the main thread's
	// wait: a signal sent before the wait has begun goes to os/signal.
	const first, last = 5000, 5400 // the burst's sizes, above the first phase's
	deadline := time.Now().Add(10 * time.Second)
	for cols := uint16(1); winchWakes.Load() == wakes; cols++ {
		if time.Now().After(deadline) || cols == first {
			t.Fatal("after 10s, no size was read on the main thread's wait: every signal went through os/signal")
		}
		if err := pty.Setsize(master, &pty.Winsize{Rows: 24, Cols: cols}); err != nil {
			t.Fatal(err)
		}
		unix.Kill(os.Getpid(), unix.SIGWINCH)
		time.Sleep(time.Millisecond)
	}
	// Then a burst, signalled faster than one path alone takes them.
	for cols := uint16(first); cols <= last; cols++ {
		if err := pty.Setsize(master, &pty.Winsize{Rows: 24, Cols: cols}); err != nil {
			t.Fatal(err)
		}
		unix.Kill(os.Getpid(), unix.SIGWINCH)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(seen)
		done := n > 0 && seen[n-1].Cols == last
		mu.Unlock()
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s the last size put is not %dx24 (%d sizes put)", last, n)
		}
		time.Sleep(time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	for i := 1; i < len(seen); i++ {
		if seen[i].Cols < seen[i-1].Cols {
			t.Fatalf("size %d put after %d: an older size after a newer one", seen[i].Cols, seen[i-1].Cols)
		}
	}
}

// TestWatchSizeStopFreesTheMainThread: once a watch stops, the main
// thread's wait ends and the next watch gets it.
func TestWatchSizeStopFreesTheMainThread(t *testing.T) {
	for range 3 {
		stop := make(chan struct{})
		takeMainThread(t, &sizeWatch{fd: -1, put: func(protocol.WindowSize) {}}, stop)
		close(stop)
	}
}

// takeMainThread starts a watch on the main thread, waiting for a watch
// stopped before to let it go.
func takeMainThread(t *testing.T, w *sizeWatch, stop <-chan struct{}) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !waitWinch(w, stop) {
		if time.Now().After(deadline) {
			t.Fatal("10s after its last watch stopped, the main thread still waits for SIGWINCH")
		}
		time.Sleep(time.Millisecond)
	}
}
