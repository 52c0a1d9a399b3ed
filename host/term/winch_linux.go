package term

import (
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Go delivers a signal to os/signal's channel through its handler, a
// runtime goroutine and a channel send: two goroutine hand-offs, each a
// thread wake-up, which cost a resize more than the rest of its path put
// together. A thread waiting in rt_sigtimedwait(2) is woken by the kernel
// with the signal itself, as a C program's handler is. Linux gives a
// signal sent to the process to its main thread first when that thread
// does not block it (complete_signal in kernel/signal.c), so the thread
// that waits is the main thread: Main keeps it free for this and runs the
// program on another goroutine. os/signal stays subscribed as well, for
// the signals that come while the main thread is busy.

var (
	// mainThread takes work to run on the main thread; nil when the
	// program did not start through Main.
	mainThread chan func()
	// mainDone is closed when Main's program returns.
	mainDone chan struct{}
	// winchWakes counts the sizes read on the main thread's wait.
	winchWakes atomic.Uint64
	// winchWaiting is set while the main thread waits for SIGWINCH.
	winchWaiting atomic.Bool
)

// Main runs run and returns its result. Call it from main with the main
// goroutine locked to the main thread (runtime.LockOSThread in an init
// function): the main thread then waits for SIGWINCH while WatchSize runs.
func Main(run func() int) int {
	if unix.Gettid() != unix.Getpid() {
		return run() // not the main thread: the signal would not come here first
	}
	mainThread, mainDone = make(chan func()), make(chan struct{})
	result := make(chan int, 1)
	go func() {
		code := run()
		result <- code
		close(mainDone)
		if winchWaiting.Load() {
			wakeMain()
		}
	}()
	for {
		select {
		case f := <-mainThread:
			f()
		case code := <-result:
			return code
		}
	}
}

// wakeMain ends the main thread's wait: it blocks SIGWINCH outside the
// wait, so a SIGWINCH sent to it alone stays pending until the wait takes
// it.
func wakeMain() { unix.Tgkill(unix.Getpid(), unix.Getpid(), unix.SIGWINCH) }

// waitWinch makes the main thread, when it is free, wait for SIGWINCH and
// call w.update for each until stop is closed. It reports whether it did.
func waitWinch(w *sizeWatch, stop <-chan struct{}) bool {
	if mainThread == nil {
		return false
	}
	waiting := make(chan struct{})
	select {
	case mainThread <- func() { winchLoop(w, stop, waiting) }:
	default:
		return false // busy with another watch: os/signal serves this one
	}
	<-waiting
	go func() {
		select {
		case <-stop:
			wakeMain()
		case <-mainDone:
		}
	}()
	return true
}

func winchLoop(w *sizeWatch, stop <-chan struct{}, waiting chan<- struct{}) {
	var set, old unix.Sigset_t
	set.Val[0] = 1 << (uint(unix.SIGWINCH) - 1)
	// Blocked outside the wait, a SIGWINCH sent to the process while this
	// thread reads the size goes to another thread and on to os/signal,
	// instead of to the runtime's handler here, which would drop it.
	unix.PthreadSigmask(unix.SIG_BLOCK, &set, &old)
	defer unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil)
	// Set before mainDone is looked at: Main's program, ending, either
	// sees it and wakes this wait, or closed mainDone first.
	winchWaiting.Store(true)
	defer winchWaiting.Store(false)
	close(waiting)
	select {
	case <-mainDone:
		return
	default:
	}
	for {
		// The kernel's sigset is 8 bytes, not unix.Sigset_t's 128.
		_, _, errno := unix.Syscall6(unix.SYS_RT_SIGTIMEDWAIT, uintptr(unsafe.Pointer(&set)), 0, 0, 8, 0, 0)
		select {
		case <-stop:
			return
		case <-mainDone:
			return
		default:
		}
		if errno == 0 {
			winchWakes.Add(1)
			w.update()
		}
	}
}
