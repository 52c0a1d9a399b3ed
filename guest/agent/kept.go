package agent

import (
	"fmt"
	"path"
	"slices"
	"strings"
	"sync"
	"time"
	"weak"

	"github.com/corkvm/cork/protocol"
)

// Kept sessions outlive their connection (protocol version 2): a client
// attaches to one by name or id, gets the output it missed or a redraw,
// and detaches by leaving. A peer reaches only the sessions its uid
// started, unless it may run as anyone (root, a trusted uid, the host);
// for the others a session "does not exist", so that its name is not
// revealed either.

// keptSessions is the agent's table of kept sessions, running and exited.
type keptSessions struct {
	mu   sync.Mutex
	byID map[string]*session
	max  int
}

func newKeptSessions(max int) *keptSessions {
	return &keptSessions{byID: map[string]*session{}, max: max}
}

// room refuses a new kept session named name: the table is full or the
// name is taken.
func (k *keptSessions) room(name string) *protocol.Error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.roomLocked(name)
}

func (k *keptSessions) roomLocked(name string) *protocol.Error {
	if len(k.byID) >= k.max {
		return &protocol.Error{Kind: protocol.KindBusy, Message: fmt.Sprintf(
			"corkd keeps at most %d sessions; cork rm or cork kill one first", k.max)}
	}
	if name == "" {
		return nil
	}
	for _, ss := range k.byID {
		if ss.name == name {
			return &protocol.Error{Kind: protocol.KindSession, Message: fmt.Sprintf("a session named %q already exists", name)}
		}
	}
	return nil
}

func (k *keptSessions) add(ss *session) *protocol.Error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if perr := k.roomLocked(ss.name); perr != nil {
		return perr
	}
	k.byID[ss.id] = ss
	return nil
}

// find returns the session ref names (an id, else a name) if peer may
// reach it.
func (k *keptSessions) find(ref string, peer Peer) *session {
	k.mu.Lock()
	defer k.mu.Unlock()
	ss := k.byID[ref]
	if ss == nil {
		for _, s := range k.byID {
			if s.name == ref && s.name != "" {
				ss = s
				break
			}
		}
	}
	if ss == nil || !mayReach(peer, ss) {
		return nil
	}
	return ss
}

// mayReach reports whether peer may list, attach to, kill or remove ss.
func mayReach(peer Peer, ss *session) bool {
	return peer.AsAny || (peer.HasUID && ss.owner.HasUID && peer.UID == ss.owner.UID)
}

func (k *keptSessions) remove(ss *session) {
	k.mu.Lock()
	delete(k.byID, ss.id)
	k.mu.Unlock()
	ss.srv.forgotten()
}

// exited files a session whose program has ended: a client saw its exit,
// so it goes; otherwise its status and output wait for its linger.
func (k *keptSessions) exited(ss *session, seen bool) {
	if seen {
		k.remove(ss)
		return
	}
	if ss.linger > 0 {
		// The timer must not keep a session removed before its linger
		// ends (cork rm) in memory for the rest of the linger.
		forgettable := weak.Make(ss)
		time.AfterFunc(ss.linger, func() {
			if ss := forgettable.Value(); ss != nil {
				ss.log.Info("exited session's linger over; forgetting it")
				k.remove(ss)
			}
		})
	}
}

func (k *keptSessions) list(peer Peer) []protocol.SessionInfo {
	k.mu.Lock()
	var all []*session
	for _, ss := range k.byID {
		if mayReach(peer, ss) {
			all = append(all, ss)
		}
	}
	k.mu.Unlock()
	infos := make([]protocol.SessionInfo, 0, len(all))
	for _, ss := range all {
		infos = append(infos, ss.info())
	}
	slices.SortFunc(infos, func(a, b protocol.SessionInfo) int { return a.Started.Compare(b.Started) })
	return infos
}

// info describes ss for a listing: never its arguments or environment.
func (ss *session) info() protocol.SessionInfo {
	in := protocol.SessionInfo{ID: ss.id, Name: ss.name, User: ss.user, Program: path.Base(ss.argv0),
		Started: ss.started.UTC(), State: protocol.StateRunning, Size: ss.currentSize()}
	ss.outMu.Lock()
	defer ss.outMu.Unlock()
	in.Attached = ss.client != nil
	in.Watchers = len(ss.watchers)
	if ss.exited {
		in.State = protocol.StateExited
		exit := ss.exit
		in.Exit = &exit
	}
	if !ss.detachedAt.IsZero() {
		t := ss.detachedAt.UTC()
		in.DetachedSince = &t
	}
	return in
}

// keptRequest serves a request about kept sessions: attach, list, kill,
// remove.
func (s *Server) keptRequest(h *handshake, t protocol.Type, p []byte, peer Peer) {
	switch t {
	case protocol.TypeList:
		h.w.WriteJSON(protocol.TypeSessions, &protocol.Sessions{Sessions: s.kept.list(peer)})
	case protocol.TypeAttach:
		var a protocol.Attach
		if !h.request(t, p, &a) {
			return
		}
		s.attachTo(h, &a, peer)
	case protocol.TypeKill:
		var k protocol.Kill
		if !h.request(t, p, &k) {
			return
		}
		ss := s.kept.find(k.Session, peer)
		if ss == nil {
			h.refuse(protocol.KindSession, noSuchSession(k.Session))
			return
		}
		if k.Signal != "" {
			if _, ok := signalNumber(k.Signal); !ok {
				h.refuse(protocol.KindRequest, fmt.Sprintf("signal %q is not one corkd sends (%s)", k.Signal, strings.Join(protocol.Signals, ", ")))
				return
			}
		}
		select {
		case <-ss.done:
			h.refuse(protocol.KindSession, fmt.Sprintf("session %q has already exited", k.Session))
			return
		default:
		}
		if k.Signal == "" {
			go ss.hangup()
			h.w.WriteJSON(protocol.TypeDone, &protocol.Done{Message: "hung up"})
			return
		}
		ss.signal(k.Signal)
		h.w.WriteJSON(protocol.TypeDone, &protocol.Done{Message: "sent SIG" + strings.ToUpper(strings.TrimPrefix(k.Signal, "SIG"))})
	case protocol.TypePeek:
		var pk protocol.Peek
		if !h.request(t, p, &pk) {
			return
		}
		s.peek(h, &pk, peer)
	case protocol.TypeRemove:
		var rm protocol.Remove
		if !h.request(t, p, &rm) {
			return
		}
		ss := s.kept.find(rm.Session, peer)
		if ss == nil {
			h.refuse(protocol.KindSession, noSuchSession(rm.Session))
			return
		}
		select {
		case <-ss.done:
		default:
			h.refuse(protocol.KindSession, fmt.Sprintf("session %q is running; cork kill it first", rm.Session))
			return
		}
		s.kept.remove(ss)
		h.w.WriteJSON(protocol.TypeDone, &protocol.Done{Message: "removed"})
	}
}

func noSuchSession(ref string) string { return fmt.Sprintf("no such session %q", ref) }

// attachTo attaches the connection to a kept session: Attached, then
// either the output the host missed (a resume) or the screen drawn for the
// host's terminal (a Restore frame), then the live session; for an exited
// session, the screen and the exit. A read-only attach watches instead.
func (s *Server) attachTo(h *handshake, a *protocol.Attach, peer Peer) {
	ss := s.kept.find(a.Session, peer)
	if ss == nil {
		h.refuse(protocol.KindSession, noSuchSession(a.Session))
		return
	}
	log := ss.log
	ss.outMu.Lock()
	old, sent, exited := ss.client, ss.sent, ss.exited
	ss.outMu.Unlock()
	if a.Resume != nil && *a.Resume > sent {
		h.refuse(protocol.KindRequest, fmt.Sprintf("resume from output byte %d: the session has written only %d", *a.Resume, sent))
		return
	}
	if a.ReadOnly && !exited {
		s.watch(h, ss, a)
		return
	}
	cl := ss.newClient(h.c, h.w)

	// The client attached now, if any, is told and let go first: a pump
	// blocked writing to it must not hold the session's output. A bad
	// request (above) takes nothing over.
	if old != nil && !a.ReadOnly {
		log.Info("another client attached; detaching the current one")
		takeOver(old)
	}

	size := a.Size.Clamped()
	if !size.Valid() {
		size = ss.currentSize()
	}
	ss.catchUpScreen()
	ss.outMu.Lock()
	from, resumed := ss.sent, false
	if a.Resume != nil && !ss.exited {
		if _, _, ok := ss.ring.since(*a.Resume); ok {
			from, resumed = *a.Resume, true
		}
	}
	err := h.w.WriteJSON(protocol.TypeAttached, &protocol.Attached{Session: ss.id, Name: ss.name, From: from,
		Resumed: resumed, Running: !ss.exited, StdinWindow: s.cfg.StdinWindow, ReadOnly: a.ReadOnly})
	if err == nil {
		if resumed {
			err = writeOutput(h.w, ss.ring, from)
		} else {
			// The screen as it is now, drawn for this terminal; the live
			// output continues it, since nothing is written meanwhile.
			err = writeRestore(h.w, ss.screenNowLocked().Render(int(size.Cols), int(size.Rows)))
		}
	}
	running := !ss.exited
	if running && err == nil {
		ss.client = cl
		ss.attached.Store(true)
		ss.detachedAt = time.Time{}
		ss.detachGen++
	}
	ss.outMu.Unlock()
	if err != nil {
		return
	}
	if !running {
		log.Info("attached to an exited session", "code", ss.exit.Code)
		cl.last(protocol.TypeExit, &ss.exit)
		return
	}
	log.Info("attached", "resumed", resumed, "from", from)
	if resumed {
		ss.resize(a.Size)
	} else {
		// What the screen got wrong, the program's own repaint mends.
		ss.redraw(a.Size)
	}
	ss.serve(cl, h.r)
}

// peek answers a Peek with the session's screen; it never sizes the
// session nor sends it input.
func (s *Server) peek(h *handshake, pk *protocol.Peek, peer Peer) {
	ss := s.kept.find(pk.Session, peer)
	if ss == nil {
		h.refuse(protocol.KindSession, noSuchSession(pk.Session))
		return
	}
	ss.catchUpScreen()
	ss.outMu.Lock()
	scr := ss.screenNowLocked()
	running := !ss.exited
	ss.outMu.Unlock()
	cols, rows := scr.Size()
	col, row, visible := scr.Cursor()
	h.w.WriteJSON(protocol.TypeSnapshot, &protocol.Snapshot{Session: ss.id, Name: ss.name, Cols: cols, Rows: rows,
		Lines: scr.Lines(pk.ANSI), CursorCol: col, CursorRow: row, CursorVisible: visible, AltScreen: scr.AltScreen(),
		Running: running})
}

// takeOver tells a client that another one took its session over, and lets
// it go; a client that does not take the news within a second is cut off.
func takeOver(cl *client) {
	done := make(chan struct{})
	go func() {
		cl.last(protocol.TypeDetached, &protocol.Detached{Reason: "another client attached to the session"})
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Second):
	}
	cl.conn.Close()
	cl.leave()
}

// writeOutput sends the ring's bytes from number from on as output frames.
func writeOutput(w *protocol.Writer, r *ring, from uint64) error {
	a, b, _ := r.since(from)
	for _, part := range [][]byte{a, b} {
		for len(part) > 0 {
			n := min(len(part), dataFrameSize)
			if err := w.WriteFrame(protocol.TypeStdout, part[:n]); err != nil {
				return err
			}
			part = part[n:]
		}
	}
	return nil
}
