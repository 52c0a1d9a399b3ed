package agent

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"os/user"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"weak"

	"github.com/corkvm/cork/guest/account"
	"github.com/corkvm/cork/protocol"
)

// Kept sessions outlive their connection (protocol version 2): a client
// attaches to one by name or id, gets the output it missed or a redraw,
// and detaches by leaving. A peer reaches only the sessions its uid
// started, unless it may run as anyone (root, a trusted uid, the host);
// for the others a session "does not exist", so that its name is not
// revealed either. Names belong to their owner, as tmux's sessions belong
// to its per-uid socket: each uid has its own, and a peer that may reach
// another uid's session names it OWNER/NAME (a user name or a uid; a name
// holds no slash) or by its id.

// DefaultMaxKeptPerUID bounds the kept sessions, running and exited, of
// one uid that may run sessions only as itself, so that one such uid
// cannot take every slot of the table. Peers that may run as anyone
// (root, the host, --allow-uid-as-any) are bounded by the total alone.
const DefaultMaxKeptPerUID = 8

// keptSessions is the agent's table of kept sessions, running and exited.
type keptSessions struct {
	mu        sync.Mutex
	byID      map[string]*session
	max       int
	maxPerUID int
	// pending holds the sessions being started: each takes its place in
	// the limits and its name before its program starts.
	pending map[*reservation]bool
	// lingered remembers the last sessions forgotten because their
	// linger ran out, oldest first, so that a request for one says so
	// rather than "no such session"; at most maxLingered.
	lingered []lingeredOut
}

// reservation is a kept session being started.
type reservation struct {
	name  string
	owner Peer
	done  chan struct{} // closed when the session is in the table, or did not start
}

// lingeredOut is what corkd remembers of a session whose linger ran out.
type lingeredOut struct {
	id, name string
	owner    Peer
	linger   time.Duration
}

// maxLingered bounds the sessions remembered as lingered out.
const maxLingered = 64

// claimWait bounds how long a create-or-attach waits for a session of its
// name that another request is starting.
const claimWait = 10 * time.Second

func newKeptSessions(max, maxPerUID int) *keptSessions {
	if maxPerUID <= 0 {
		maxPerUID = DefaultMaxKeptPerUID
	}
	return &keptSessions{byID: map[string]*session{}, pending: map[*reservation]bool{}, max: max, maxPerUID: maxPerUID}
}

// claim reserves room and the name for a new kept session of owner's, or,
// when orAttach is set and owner has a session of that name, returns it
// instead (waiting for it when another request is starting it).
func (k *keptSessions) claim(name string, owner Peer, orAttach bool) (*session, *reservation, *protocol.Error) {
	deadline := time.Now().Add(claimWait)
	k.mu.Lock()
	defer k.mu.Unlock()
	for name != "" {
		if ss := k.namedLocked(ownerUID(owner), name); ss != nil {
			if orAttach {
				return ss, nil, nil
			}
			return nil, nil, nameTaken(name)
		}
		r := k.startingLocked(ownerUID(owner), name)
		if r == nil {
			break
		}
		if !orAttach {
			return nil, nil, nameTaken(name)
		}
		k.mu.Unlock()
		timer := time.NewTimer(time.Until(deadline))
		select {
		case <-r.done:
		case <-timer.C:
		}
		timer.Stop()
		k.mu.Lock()
		if time.Now().After(deadline) {
			return nil, nil, &protocol.Error{Kind: protocol.KindBusy, Message: fmt.Sprintf("session %q is still starting", name)}
		}
	}
	if perr := k.limitsLocked(owner); perr != nil {
		return nil, nil, perr
	}
	r := &reservation{name: name, owner: owner, done: make(chan struct{})}
	k.pending[r] = true
	return nil, r, nil
}

func nameTaken(name string) *protocol.Error {
	return &protocol.Error{Kind: protocol.KindSession, Message: fmt.Sprintf("you already have a session named %q", name)}
}

// limitsLocked refuses a new kept session of owner's when the table is
// full or owner has its most. k.mu is held.
func (k *keptSessions) limitsLocked(owner Peer) *protocol.Error {
	if len(k.byID)+len(k.pending) >= k.max {
		return &protocol.Error{Kind: protocol.KindBusy, Message: fmt.Sprintf(
			"corkd keeps at most %d sessions; cork rm or cork kill one first", k.max)}
	}
	if owner.AsAny {
		return nil
	}
	n := 0
	for _, ss := range k.byID {
		if ss.owner.HasUID && ss.owner.UID == owner.UID {
			n++
		}
	}
	for r := range k.pending {
		if r.owner.HasUID && r.owner.UID == owner.UID {
			n++
		}
	}
	if n >= k.maxPerUID {
		return &protocol.Error{Kind: protocol.KindBusy, Message: fmt.Sprintf(
			"corkd keeps at most %d sessions per user (--max-kept-per-uid), and uid %d has %d; cork rm or cork kill one first",
			k.maxPerUID, owner.UID, n)}
	}
	return nil
}

// startingLocked returns the reservation of owner's session named name
// being started, if any. k.mu is held.
func (k *keptSessions) startingLocked(owner uint32, name string) *reservation {
	for r := range k.pending {
		if r.name == name && ownerUID(r.owner) == owner {
			return r
		}
	}
	return nil
}

// add puts ss, started on reservation r, in the table.
func (k *keptSessions) add(ss *session, r *reservation) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.pending, r)
	k.byID[ss.id] = ss
	close(r.done)
}

// release gives up reservation r of a session that did not start; once its
// session is in the table it does nothing.
func (k *keptSessions) release(r *reservation) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.pending[r] {
		delete(k.pending, r)
		close(r.done)
	}
}

// ownerUID is the uid whose names a peer's sessions take: its own, and for
// the host (vsock, serial, stdio), which no uid identifies, root's.
func ownerUID(p Peer) uint32 {
	if p.HasUID {
		return p.UID
	}
	return 0
}

// namedLocked returns owner's session named name, if any. k.mu is held.
func (k *keptSessions) namedLocked(owner uint32, name string) *session {
	for _, ss := range k.byID {
		if ss.name == name && ownerUID(ss.owner) == owner {
			return ss
		}
	}
	return nil
}

// find returns the session ref names if peer may reach it: an id, a name
// of the peer's own, or OWNER/NAME.
func (k *keptSessions) find(ref string, peer Peer) *session {
	owner, name := ownerUID(peer), ref
	if o, n, ok := strings.Cut(ref, "/"); ok {
		acct, err := account.Lookup(o)
		if err != nil {
			return nil
		}
		owner, name = acct.UID, n
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	ss := k.byID[ref]
	if ss == nil && name != "" {
		ss = k.namedLocked(owner, name)
	}
	if ss == nil || !mayReach(peer, ss) {
		return nil
	}
	return ss
}

// refFor is how peer names ss: by its name when it is the peer's own,
// OWNER/NAME when another uid's, by its id when it has no name.
func (ss *session) refFor(peer Peer) string {
	switch {
	case ss.name == "":
		return ""
	case ownerUID(ss.owner) == ownerUID(peer):
		return ss.name
	}
	return ss.ownerName + "/" + ss.name
}

// ownerName is the name of uid's passwd entry, or the uid itself.
func ownerName(uid uint32) string {
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		return u.Username
	}
	return strconv.FormatUint(uint64(uid), 10)
}

// mayReach reports whether peer may list, attach to, kill or remove ss.
func mayReach(peer Peer, ss *session) bool { return mayReachOwner(peer, ss.owner) }

// mayReachOwner reports whether peer may reach the sessions owner starts.
func mayReachOwner(peer, owner Peer) bool {
	return peer.AsAny || (peer.HasUID && owner.HasUID && peer.UID == owner.UID)
}

func (k *keptSessions) remove(ss *session) {
	k.mu.Lock()
	delete(k.byID, ss.id)
	k.mu.Unlock()
	ss.srv.forgotten()
}

// gaveExit forgets an exited session once a client was given its exit
// (err, the write's outcome, is nil): as tmux forgets a session whose
// program ended. A client that did not get it leaves the status to its
// linger, for the next attach.
func (ss *session) gaveExit(err error) {
	if err != nil {
		ss.log.Info("client did not get the exit; the session waits for its linger", "err", err)
		ss.outMu.Lock()
		defer ss.outMu.Unlock()
		if ss.detachedAt.IsZero() {
			ss.detachedAt = time.Now()
		}
		return
	}
	ss.log.Info("client given the exit; forgetting the session", "code", ss.exit.Code)
	ss.srv.kept.remove(ss)
}

// exited files a session whose program has ended: its status and output
// wait for its linger, unless a client is given its exit before.
func (k *keptSessions) exited(ss *session) {
	if ss.linger > 0 {
		// The timer must not keep a session removed before its linger
		// ends (cork rm) in memory for the rest of the linger.
		forgettable := weak.Make(ss)
		time.AfterFunc(ss.linger, func() {
			ss := forgettable.Value()
			if ss == nil {
				return // removed and collected
			}
			k.mu.Lock()
			kept := k.byID[ss.id] == ss
			k.mu.Unlock()
			if !kept {
				return // removed (cork rm) before its linger ended
			}
			ss.log.Info("exited session's linger over; forgetting it")
			k.remove(ss)
			k.mu.Lock()
			if len(k.lingered) == maxLingered {
				k.lingered = append(k.lingered[:0], k.lingered[1:]...)
			}
			k.lingered = append(k.lingered, lingeredOut{id: ss.id, name: ss.name, owner: ss.owner, linger: ss.linger})
			k.mu.Unlock()
		})
	}
}

// missing says why ref names no session peer may reach: it lingered out,
// when corkd remembers that of a session peer may reach, or there is no
// such session.
func (k *keptSessions) missing(ref string, peer Peer) string {
	owner, name := ownerUID(peer), ref
	if o, n, ok := strings.Cut(ref, "/"); ok {
		if acct, err := account.Lookup(o); err == nil {
			owner, name = acct.UID, n
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for i := len(k.lingered) - 1; i >= 0; i-- {
		l := k.lingered[i]
		named := l.name != "" && l.name == name && ownerUID(l.owner) == owner
		if (l.id == ref || named) && mayReachOwner(peer, l.owner) {
			return fmt.Sprintf("session %q lingered out: it exited while detached and was forgotten %s later (--linger)", ref, l.linger)
		}
	}
	return noSuchSession(ref)
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
	in := protocol.SessionInfo{ID: ss.id, Name: ss.name, Owner: ss.ownerName, User: ss.user, Program: path.Base(ss.argv0),
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

// keptRequest serves a request about kept sessions: attach, list, peek,
// kill, remove.
func (s *Server) keptRequest(h *handshake, t protocol.Type, p []byte, peer Peer) {
	switch t {
	case protocol.TypeList:
		h.w.WriteJSON(protocol.TypeSessions, &protocol.Sessions{Sessions: s.kept.list(peer)})
	case protocol.TypeAttach:
		serveKept(h, t, p, peer, s.attachTo)
	case protocol.TypePeek:
		serveKept(h, t, p, peer, s.peek)
	case protocol.TypeKill:
		serveKept(h, t, p, peer, s.kill)
	case protocol.TypeRemove:
		serveKept(h, t, p, peer, s.remove)
	}
}

// serveKept decodes a request of type t and serves it with serve, or
// refuses it as malformed.
func serveKept[R any](h *handshake, t protocol.Type, p []byte, peer Peer, serve func(*handshake, *R, Peer)) {
	var req R
	if h.request(t, p, &req) {
		serve(h, &req, peer)
	}
}

// findKept returns the kept session ref names, if peer may reach it, or
// refuses the request.
func (s *Server) findKept(h *handshake, ref string, peer Peer) *session {
	ss := s.kept.find(ref, peer)
	if ss == nil {
		h.refuse(protocol.KindSession, s.kept.missing(ref, peer))
	}
	return ss
}

// kill hangs a running kept session up, or sends it the signal asked for.
func (s *Server) kill(h *handshake, k *protocol.Kill, peer Peer) {
	ss := s.findKept(h, k.Session, peer)
	if ss == nil {
		return
	}
	if k.Signal != "" {
		if _, ok := signalNumber(k.Signal); !ok {
			h.refuse(protocol.KindRequest, fmt.Sprintf("signal %q is not one corkd sends (%s)", k.Signal, strings.Join(protocol.Signals, ", ")))
			return
		}
	}
	if ss.ended() {
		h.refuse(protocol.KindSession, fmt.Sprintf("session %q has already exited", k.Session))
		return
	}
	if k.Signal == "" {
		go ss.hangup()
		h.w.WriteJSON(protocol.TypeDone, &protocol.Done{Message: "hung up"})
		return
	}
	ss.signal(k.Signal)
	h.w.WriteJSON(protocol.TypeDone, &protocol.Done{Message: "sent SIG" + strings.ToUpper(strings.TrimPrefix(k.Signal, "SIG"))})
}

// remove forgets an exited kept session.
func (s *Server) remove(h *handshake, rm *protocol.Remove, peer Peer) {
	ss := s.findKept(h, rm.Session, peer)
	if ss == nil {
		return
	}
	if !ss.ended() {
		h.refuse(protocol.KindSession, fmt.Sprintf("session %q is running; cork kill it first", rm.Session))
		return
	}
	s.kept.remove(ss)
	h.w.WriteJSON(protocol.TypeDone, &protocol.Done{Message: "removed"})
}

// ended reports whether the session is over: its program exited and its
// output was read.
func (ss *session) ended() bool {
	select {
	case <-ss.done:
		return true
	default:
		return false
	}
}

func noSuchSession(ref string) string { return fmt.Sprintf("no such session %q", ref) }

// execKept starts a kept session, or, when the request asks for it
// (Exec.AttachExisting), attaches to the peer's session of that name if
// there is one. The name and a place in the table are taken before the
// program starts, so that of two requests for one name one starts the
// program and the other finds it.
func (s *Server) execKept(hs *handshake, req *protocol.Exec, peer Peer) {
	existing, r, perr := s.kept.claim(req.Name, peer, req.AttachExisting)
	switch {
	case perr != nil:
		hs.refuse(perr.Kind, perr.Message)
		return
	case existing != nil:
		// The attach holds the connection as any attach does: admitted,
		// out of the pending ones and their deadline.
		if hs.admitted() {
			s.attachTo(hs, &protocol.Attach{Session: existing.id, Size: req.Size, Terminal: req.Terminal}, peer)
		}
		return
	}
	defer s.kept.release(r) // unless the session is in the table
	if ss, cl := s.startSession(hs, req, peer, r); ss != nil {
		ss.runClient(cl, hs.r)
	}
}

// attachTo attaches the connection to a kept session: Attached, then
// either the output the host missed (a resume) or the screen drawn for the
// host's terminal (a Restore frame), then the live session; for an exited
// session, the screen and the exit. A read-only attach watches instead.
func (s *Server) attachTo(h *handshake, a *protocol.Attach, peer Peer) {
	ss := s.findKept(h, a.Session, peer)
	if ss == nil {
		return
	}
	ss.outMu.Lock()
	sent, exited := ss.sent, ss.exited
	ss.outMu.Unlock()
	if a.Resume != nil && *a.Resume > sent {
		h.refuse(protocol.KindRequest, fmt.Sprintf("resume from output byte %d: the session has written only %d", *a.Resume, sent))
		return
	}
	if a.ReadOnly && !exited && s.watch(h, ss, a, peer) {
		return
	} // else it exited meanwhile: it is answered as an exited session is
	cl := ss.newClient(h.c, h.w)
	cl.terminal = a.Terminal
	// The screen catches up outside the lock live output takes.
	ss.catchUpScreen()
	at, restore := ss.join(cl, a, s.cfg.StdinWindow)
	if at == nil {
		ss.log.Info("a client taken over tried to resume; told it was taken over")
		cl.last(protocol.TypeDetached, takenOver)
		return
	}
	at.Name = ss.refFor(peer)
	// Written by this goroutine without the session's lock, with the
	// client's deadline; the feed, started after, continues from the
	// cursor join set, so the output between is not lost.
	err := cl.w.WriteJSON(protocol.TypeAttached, at)
	if err == nil && restore != nil {
		err = writeRestore(cl.w, restore)
	}
	if !at.Running {
		if err == nil {
			ss.gaveExit(cl.last(protocol.TypeExit, &ss.exit))
		}
		return
	}
	if err != nil {
		ss.log.Info("client stopped reading at attach; detaching it", "err", err)
		ss.cutOff(cl)
		return
	}
	go ss.feed(cl)
	ss.log.Info("attached", "resumed", at.Resumed, "from", at.From)
	if at.Resumed {
		ss.resize(a.Size)
	} else {
		// What the screen got wrong, the program's own repaint mends.
		ss.redraw(a.Size)
	}
	ss.runClient(cl, h.r)
}

// takenOver is what a client taken over is told.
var takenOver = &protocol.Detached{Reason: "another client attached to the session"}

// join makes cl the client of a running session, taking it over from any
// other, and returns what the client is told first: Attached, and the
// screen drawn for its terminal unless it resumes. All of it under outMu,
// which only memory operations take, so that the output after it
// continues exactly what the client gets. A resume by a client that was
// taken over gets nothing (nil): a takeover is final.
func (ss *session) join(cl *client, a *protocol.Attach, window uint32) (*protocol.Attached, []byte) {
	size := a.Size.Clamped()
	if !size.Valid() {
		size = ss.currentSize()
	}
	ss.outMu.Lock()
	defer ss.outMu.Unlock()
	returning := a.Resume != nil && a.Holder != 0
	if returning && !ss.holds(a) {
		return nil, nil
	}
	from, resumed := ss.sent, false
	if a.Resume != nil && !ss.exited {
		if _, _, ok := ss.ring.since(*a.Resume); ok {
			from, resumed = *a.Resume, true
		}
	}
	at := &protocol.Attached{Session: ss.id, Name: ss.name, From: from, Resumed: resumed,
		Running: !ss.exited, StdinWindow: window, ReadOnly: a.ReadOnly}
	var restore []byte
	if !resumed {
		// The screen as it is now, drawn for this terminal; the live
		// output continues it.
		restore = ss.restoreLocked(a.Terminal, size)
	}
	if !ss.exited {
		// A new hold: the client it takes over, should it resume, is
		// told it was taken over; a client that resumes may resume
		// again with the hold it gave, in case it never heard back.
		ss.heldBefore, ss.heldAttempt = 0, 0
		if returning {
			ss.heldBefore, ss.heldAttempt = a.Holder, a.Attempt
		}
		ss.holder = newHolder()
		ss.attachLocked(cl, from)
		at.Holder = ss.holder
	}
	return at, restore
}

// holds reports whether a resume continues the session's latest hold: it
// gives that hold, or repeats the resume that gave it (its client may not
// have heard back) with a later Attempt. An earlier one is a try the guest
// read late, from a connection its client has since left: taking it would
// take the session from the client's own newer connection.
func (ss *session) holds(a *protocol.Attach) bool {
	switch a.Holder {
	case ss.holder:
		return true
	case ss.heldBefore:
		return a.Attempt == 0 || a.Attempt > ss.heldAttempt
	}
	return false
}

// newHolder returns a new hold: random, never 0 (no hold).
func newHolder() uint64 {
	var b [8]byte
	for {
		rand.Read(b[:])
		if h := binary.LittleEndian.Uint64(b[:]); h != 0 {
			return h
		}
	}
}

// peek answers a Peek with the session's screen; it never sizes the
// session nor sends it input.
func (s *Server) peek(h *handshake, pk *protocol.Peek, peer Peer) {
	ss := s.findKept(h, pk.Session, peer)
	if ss == nil {
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
