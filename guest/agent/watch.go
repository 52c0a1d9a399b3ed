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
		writeRestore(w.w, w.ss.screen.emu.Repaint(int(size.Cols), int(size.Rows)))
		w.w.WriteJSON(protocol.TypeExit, exit)
	}()
	select {
	case <-done:
	case <-time.After(time.Second):
	}
	w.leave()
}

// watch serves a watcher until it leaves or the session ends. It reports
// false, having written nothing, when the session exited before the
// watcher could join it: the caller answers as for an exited session.
func (s *Server) watch(h *handshake, ss *session, a *protocol.Attach, peer Peer) bool {
	ss.catchUpScreen()
	size := a.Size.Clamped()
	if !size.Valid() {
		size = ss.currentSize()
	}
	// Its writes have a deadline, as a client's: a watcher that stops
	// reading is let go.
	w := &watcher{ss: ss, conn: h.c, w: protocol.NewWriter(stallWriter{h.c}), size: size,
		resized: make(chan struct{}, 1), gone: make(chan struct{})}
	at, restore, drawn, perr := ss.addWatcher(w, a, peer)
	switch {
	case perr != nil:
		h.refuse(perr.Kind, perr.Message)
		return true
	case at == nil:
		return false
	}
	// Written without the session's lock, which the program's output
	// takes.
	err := w.w.WriteJSON(protocol.TypeAttached, at)
	if err == nil {
		err = writeRestore(w.w, restore)
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
		return true
	}
	ss.log.Info("watcher attached", "watchers", ss.watched.Load())
	go w.readFrames(h.r)
	w.follow(drawn)
	return true
}

// addWatcher registers w and returns what it is told first and the output
// its screen shows; nil when the session has exited (finish gave its
// watchers the end and keeps no more), perr when it has its most.
func (ss *session) addWatcher(w *watcher, a *protocol.Attach, peer Peer) (at *protocol.Attached, restore []byte, drawn uint64, perr *protocol.Error) {
	ss.outMu.Lock()
	defer ss.outMu.Unlock()
	if ss.exited {
		return nil, nil, 0, nil
	}
	if len(ss.watchers) >= MaxWatchers {
		return nil, nil, 0, &protocol.Error{Kind: protocol.KindBusy,
			Message: fmt.Sprintf("session %q has %d watchers, the most it takes", a.Session, MaxWatchers)}
	}
	ss.watchers[w] = true
	ss.watched.Add(1)
	at = &protocol.Attached{Session: ss.id, Name: ss.refFor(peer), From: ss.sent, Running: true, ReadOnly: true}
	restore = ss.screenNowLocked().Render(int(w.size.Cols), int(w.size.Rows))
	return at, restore, ss.sent, nil
}

// follow redraws the watcher's view as the screen changes, until it leaves
// or the session ends.
func (w *watcher) follow(drawn uint64) {
	ss := w.ss
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
		sent, backlog, end, lost, exited := ss.watchBacklog(drawn)
		if exited {
			<-w.gone // finish gives it the end
			return
		}
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
		frame := ss.screen.emu.Repaint(int(size.Cols), int(size.Rows))
		timer.Reset(min(max(watchEvery, 10*time.Since(began)), watchSlowest))
		if err := writeRestore(w.w, frame); err != nil {
			return
		}
	}
}

// watchBacklog returns the output so far and, when a watcher's view drawn
// up to output byte drawn is behind, a copy of what its screen has yet to
// catch up with: the screen catches up from the copy, not under the lock
// the program's output takes, so that a watcher never slows it.
func (ss *session) watchBacklog(drawn uint64) (sent uint64, backlog []byte, end uint64, lost, exited bool) {
	ss.outMu.Lock()
	defer ss.outMu.Unlock()
	if ss.exited {
		return 0, nil, 0, false, true
	}
	sent = ss.sent
	if sent != drawn {
		backlog, end, lost = ss.screenBacklogLocked()
	}
	return sent, backlog, end, lost, false
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
