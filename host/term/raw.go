package term

import (
	"os"
	"os/signal"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	xterm "golang.org/x/term"

	"github.com/corkvm/cork/protocol"
)

// Raw is the operator's terminal in raw mode for a session's life. A job
// control shell puts its own modes back when cork stops and does not
// restore cork's when it continues, so cork does it, as vim and tmux do:
// SIGTSTP restores the operator's modes before cork stops, and SIGCONT
// makes the terminal raw again (KeepAcrossStops).
type Raw struct {
	fd   int
	orig *xterm.State
	raw  *unix.Termios // the modes raw mode set, to set again

	mu   sync.Mutex
	done bool // Restore was called: the session is over
}

// EnterRaw puts fd in raw mode.
func EnterRaw(fd int) (*Raw, error) {
	orig, err := xterm.MakeRaw(fd)
	if err != nil {
		return nil, err
	}
	raw, err := unix.IoctlGetTermios(fd, ioctlGetTermios)
	if err != nil {
		xterm.Restore(fd, orig)
		return nil, err
	}
	return &Raw{fd: fd, orig: orig, raw: raw}, nil
}

// Restore puts the operator's modes back for good: a stop or continue
// after it changes nothing.
func (r *Raw) Restore() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.done = true
	xterm.Restore(r.fd, r.orig)
}

// pause puts the operator's modes back while cork is stopped.
func (r *Raw) pause() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.done {
		xterm.Restore(r.fd, r.orig)
	}
}

// again makes the terminal raw again after a stop, and reports whether the
// session is still on.
func (r *Raw) again() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return false
	}
	unix.IoctlSetTermios(r.fd, ioctlSetTermios, r.raw)
	return true
}

// KeepAcrossStops keeps r raw across stops until stop is closed. SIGTSTP
// (kill -TSTP: in raw mode Ctrl-Z is a byte for the program) restores the
// operator's modes, then stops cork with SIGSTOP; SIGCONT, after that or
// after a kill -STOP, makes the terminal raw again and calls redraw, for
// the program to paint over what the shell printed meanwhile.
func KeepAcrossStops(r *Raw, redraw func(), stop <-chan struct{}) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, unix.SIGTSTP, unix.SIGCONT)
	go func() {
		defer signal.Stop(sigs)
		for {
			select {
			case s := <-sigs:
				if s == unix.SIGTSTP {
					r.pause()
					unix.Kill(os.Getpid(), unix.SIGSTOP)
					continue // SIGCONT follows
				}
				if r.again() && redraw != nil {
					redraw()
				}
			case <-stop:
				return
			}
		}
	}()
}

// redrawDelay is how long Redraw leaves the program at the other size: long
// enough for it to read that size, so that it repaints at the real one.
const redrawDelay = 50 * time.Millisecond

// Redraw makes the program repaint: it sizes the session one column
// narrower (wider when it has one column), then, shortly after, back to
// fd's size. The kernel signals no change of an unchanged size, and
// programs repaint on SIGWINCH; corkd does the same on attach.
func Redraw(fd int, put func(protocol.WindowSize)) {
	s, err := Size(fd)
	if err != nil || !s.Valid() {
		return
	}
	other := s
	if other.Cols > 1 {
		other.Cols--
	} else {
		other.Cols++
	}
	put(other)
	time.AfterFunc(redrawDelay, func() {
		if s, err := Size(fd); err == nil && s.Valid() {
			put(s)
		}
	})
}
