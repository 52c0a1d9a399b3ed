package agent

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/corkvm/cork/protocol"
)

// watcher is a read-only client of a kept session (cork attach
// --read-only): it gets the screen, drawn for its own size, as the screen
// changes, sends no input and never sizes the session. It is drawn from
// the screen rather than sent the raw output, so that a watcher smaller
// than the session sees it clipped and a larger one sees it padded, and so
// that a slow watcher only sees fewer frames: nobody waits on it.
type watcher struct {
	ss   *session
	conn io.ReadWriteCloser
	w    *protocol.Writer

	mu      sync.Mutex
	size    protocol.WindowSize
	resized chan struct{}
	gone    chan struct{}
	once    sync.Once
}

// watchEvery is how often a watcher's view is redrawn while the screen
// changes: 25 frames a second, fewer when a redraw costs more than a tenth
// of that (a flood of output, which the screen catches up with slowly),
// so that watchers never take more than about a tenth of a core.
const (
	watchEvery   = 40 * time.Millisecond
	watchSlowest = 250 * time.Millisecond
)

func (w *watcher) leave() {
	w.once.Do(func() {
		close(w.gone)
		w.conn.Close()
	})
}

// end gives the watcher the last screen and the program's exit.
func (w *watcher) end(exit *protocol.Exit) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.mu.Lock()
		size := w.size
		w.mu.Unlock()
		w.w.WriteFrame(protocol.TypeRestore, w.ss.screen.scr.Repaint(int(size.Cols), int(size.Rows)))
		w.w.WriteJSON(protocol.TypeExit, exit)
	}()
	select {
	case <-done:
	case <-time.After(time.Second):
	}
	w.leave()
}

// watch serves a watcher until it leaves or the session ends.
func (s *Server) watch(h *handshake, ss *session, a *protocol.Attach, peer Peer) {
	ss.outMu.Lock()
	if len(ss.watchers) >= MaxWatchers {
		ss.outMu.Unlock()
		h.refuse(protocol.KindBusy, fmt.Sprintf("session %q has %d watchers, the most it takes", a.Session, MaxWatchers))
		return
	}
	size := a.Size.Clamped()
	if !size.Valid() {
		size = ss.currentSize()
	}
	// Its writes have a deadline, as a client's: a watcher that stops
	// reading is let go.
	w := &watcher{ss: ss, conn: h.c, w: protocol.NewWriter(stallWriter{h.c}), size: size,
		resized: make(chan struct{}, 1), gone: make(chan struct{})}
	ss.watchers[w] = true
	ss.watched.Add(1)
	at := &protocol.Attached{Session: ss.id, Name: ss.refFor(peer), From: ss.sent, Running: true, ReadOnly: true}
	restore := ss.screenNowLocked().Render(int(size.Cols), int(size.Rows))
	drawn := ss.sent
	ss.outMu.Unlock()
	// Written without the session's lock, which the program's output
	// takes.
	err := w.w.WriteJSON(protocol.TypeAttached, at)
	if err == nil {
		err = w.w.WriteFrame(protocol.TypeRestore, restore)
	}
	defer func() {
		ss.outMu.Lock()
		if ss.watchers[w] {
			delete(ss.watchers, w)
			ss.watched.Add(-1)
		}
		ss.outMu.Unlock()
		w.leave()
	}()
	if err != nil {
		return
	}
	ss.log.Info("watcher attached", "watchers", ss.watched.Load())
	go w.readFrames(h.r)

	timer := time.NewTimer(watchEvery)
	defer timer.Stop()
	for {
		redraw := false
		select {
		case <-timer.C:
		case <-w.resized:
			redraw = true
		case <-w.gone:
			return
		}
		// The screen catches up from a copy of the output, not under the
		// lock the program's output takes: a watcher never slows it.
		ss.outMu.Lock()
		if ss.exited {
			ss.outMu.Unlock()
			<-w.gone // finish gives it the end
			return
		}
		sent := ss.sent
		var backlog []byte
		var end uint64
		var lost bool
		if sent != drawn {
			backlog, end, lost = ss.screenBacklogLocked()
		}
		ss.outMu.Unlock()
		if sent == drawn && !redraw {
			timer.Reset(watchEvery)
			continue
		}
		began := time.Now()
		if sent != drawn {
			ss.screen.catchUp(backlog, end, lost)
			drawn = sent
		}
		w.mu.Lock()
		size := w.size
		w.mu.Unlock()
		frame := ss.screen.scr.Repaint(int(size.Cols), int(size.Rows))
		timer.Reset(min(max(watchEvery, 10*time.Since(began)), watchSlowest))
		if err := w.w.WriteFrame(protocol.TypeRestore, frame); err != nil {
			return
		}
	}
}

// readFrames takes the watcher's frames: its own terminal's size, pings,
// and nothing else. It ends the watcher when the connection does.
func (w *watcher) readFrames(r *protocol.Reader) {
	defer w.leave()
	for {
		t, p, err := r.Next()
		if err != nil {
			return
		}
		switch t {
		case protocol.TypeResize:
			size, err := protocol.DecodeResize(p)
			if err != nil || !size.Valid() {
				continue
			}
			w.mu.Lock()
			w.size = size.Clamped()
			w.mu.Unlock()
			select {
			case w.resized <- struct{}{}:
			default:
			}
		case protocol.TypePing:
			w.w.WriteFrame(protocol.TypePong, p)
		default:
			err := &protocol.Error{Kind: protocol.KindProtocol, Message: fmt.Sprintf("a read-only client sends no %s", t)}
			w.w.WriteJSON(protocol.TypeError, err)
			return
		}
	}
}
