package agent

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/corkvm/cork/guest/screen"
	"github.com/corkvm/cork/protocol"
)

// A kept session's screen, fed here from its output: the terminal
// emulator (guest/screen) that draws it for a client that attaches after
// output it did not see, for watchers and for cork peek. The screen is
// never on the output path: the pump only copies output into the ring and
// nudges the screen's goroutine (feedScreen), which reads the ring at its
// own pace; when it falls behind the ring, it starts again from the output
// it still has.

// keptScreen is a kept session's screen: the emulator and how far it has
// read of the output.
type keptScreen struct {
	mu   sync.Mutex // held while catching up
	emu  *screen.Screen
	fed  atomic.Uint64 // output bytes the screen has read; set under mu, read without
	wake chan struct{}

	sizeMu sync.Mutex
	sizes  []sizeAt // resizes the screen has yet to follow, in order

	replies chan []byte // the screen's answers to the program's queries
}

// sizeAt is a resize and the output byte it came after.
type sizeAt struct {
	at   uint64
	size protocol.WindowSize
}

// maxSizesKept bounds the resizes waiting for the screen: a drag makes
// many, and only the last matters once the screen catches up.
const maxSizesKept = 64

// How long the screen waits for a pause in the output before it catches
// up: it matters only when someone looks, and a flood costs it most
// (attach, peek and the watchers' redraws catch it up at once).
const (
	screenQuiet    = 50 * time.Millisecond
	screenMaxDelay = 500 * time.Millisecond
)

func (ss *session) newScreen(size protocol.WindowSize) {
	sc := &keptScreen{wake: make(chan struct{}, 1), replies: make(chan []byte, 32)}
	sc.emu = screen.New(int(size.Cols), int(size.Rows), ss.srv.cfg.ScreenScrollback, func(p []byte) {
		select {
		case sc.replies <- p:
		default: // a program flooding queries loses answers, never the screen
		}
	})
	ss.screen = sc
}

// close ends the screen's goroutine once the session is over: the screen
// is still drawn for attaches and peeks until the session is forgotten.
func (sc *keptScreen) close() {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.emu.Close()
}

// nudge tells the screen output came; it never waits.
func (sc *keptScreen) nudge() {
	select {
	case sc.wake <- struct{}{}:
	default:
	}
}

// noteSize records a resize for the screen, after output byte at.
func (sc *keptScreen) noteSize(at uint64, s protocol.WindowSize) {
	sc.sizeMu.Lock()
	defer sc.sizeMu.Unlock()
	if n := len(sc.sizes); n > 0 && sc.sizes[n-1].at == at {
		sc.sizes[n-1].size = s
	} else {
		sc.sizes = append(sc.sizes, sizeAt{at, s})
	}
	if len(sc.sizes) > maxSizesKept {
		sc.sizes = append(sc.sizes[:0], sc.sizes[len(sc.sizes)-maxSizesKept:]...)
	}
}

// feedScreen feeds the screen the output, once it pauses, until the
// session ends; and answers the program's queries of its terminal while
// no client is attached to answer them.
func (ss *session) feedScreen() {
	sc := ss.screen
	for {
		select {
		case <-sc.wake:
		case p := <-sc.replies:
			if !ss.attached.Load() {
				ss.master.Write(p)
			}
			continue
		case <-ss.done:
			return
		}
		quiet := screenQuiet
		timer := time.NewTimer(quiet)
		deadline := time.After(screenMaxDelay)
	wait:
		for {
			select {
			case <-sc.wake:
				timer.Reset(quiet)
			case <-timer.C:
				break wait
			case <-deadline:
				break wait
			case <-ss.done:
				break wait
			}
		}
		timer.Stop()
		ss.catchUpScreen()
	}
}

// catchUpScreen catches the screen up with a copy of the output so far,
// without the output's lock: a catch-up never holds the program's output,
// nor ls. Done before the screen is needed under that lock, it leaves
// screenNowLocked only what came meanwhile.
func (ss *session) catchUpScreen() {
	ss.outMu.Lock()
	backlog, end, lost := ss.screenBacklogLocked()
	ss.outMu.Unlock()
	ss.screen.catchUp(backlog, end, lost)
}

// screenBacklogLocked copies the output the screen has not read: from the
// ring, or all the ring holds when the screen fell behind it. outMu is
// held.
func (ss *session) screenBacklogLocked() (backlog []byte, end uint64, lost bool) {
	fed := ss.screen.fed.Load()
	a, b, ok := ss.ring.since(fed)
	if !ok {
		a, b, _ = ss.ring.since(ss.ring.start)
		lost = true
	}
	backlog = make([]byte, 0, len(a)+len(b))
	return append(append(backlog, a...), b...), ss.ring.end, lost
}

// catchUp feeds the screen a backlog of output ending at byte end, with the
// resizes made along the way.
func (sc *keptScreen) catchUp(backlog []byte, end uint64, lost bool) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if end <= sc.fed.Load() && !lost {
		return
	}
	start := end - uint64(len(backlog))
	sc.sizeMu.Lock()
	sizes := sc.sizes
	sc.sizes = nil
	sc.sizeMu.Unlock()
	pos := start
	for _, s := range sizes {
		if s.at > pos && s.at <= end {
			sc.emu.CatchUp(backlog[pos-start:s.at-start], lost)
			lost, pos = false, s.at
		}
		sc.emu.Resize(int(s.size.Cols), int(s.size.Rows))
	}
	sc.emu.CatchUp(backlog[pos-start:], lost)
	sc.fed.Store(end)
}

// screenNowLocked catches the screen up with all output so far. outMu is
// held, so that nothing is written in between: what follows on a
// connection continues the screen exactly. Callers catch up first without
// the lock (catchUpScreen), so that little is left to do under it; what
// is left is bounded like any catch-up (guest/screen's CatchUp).
func (ss *session) screenNowLocked() *screen.Screen {
	backlog, end, lost := ss.screenBacklogLocked()
	ss.screen.catchUp(backlog, end, lost)
	return ss.screen.emu
}

// restoreLocked draws the screen for a terminal of size that attaches. The
// lines scrolled off go with it unless the terminal is the one the last
// client showed the session on and nothing was written since it left:
// that terminal holds them, and each attach would copy them into its
// history again. outMu is held.
func (ss *session) restoreLocked(terminal string, size protocol.WindowSize) []byte {
	scr := ss.screenNowLocked()
	if terminal != "" && terminal == ss.leftTerminal && ss.sent == ss.leftAt {
		return scr.RenderScreen(int(size.Cols), int(size.Rows))
	}
	return scr.Render(int(size.Cols), int(size.Rows))
}

// writeRestore sends a screen drawn for a client as Restore frames: a large
// screen in colour can outgrow one frame, which the peer would refuse.
func writeRestore(w *protocol.Writer, p []byte) error {
	for {
		n := min(len(p), protocol.MaxPayload)
		if err := w.WriteFrame(protocol.TypeRestore, p[:n]); err != nil {
			return err
		}
		if p = p[n:]; len(p) == 0 {
			return nil
		}
	}
}
