package agent

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// conns is the table of the connections the agent serves. A connection is
// pending from its first byte until it is admitted to a session (or a
// copy): pending ones are bounded in total and per peer, so that idle
// connections, which cost the agent a goroutine, a descriptor and a
// buffer each, can neither pile up nor let one peer shut out the others.
// The sessions of a peer confined to its own uid are bounded here too, so
// that such a peer cannot take every session from the others.
type conns struct {
	max, maxPerPeer    int
	maxSessionsPerPeer int
	// maxBytes and maxBytesPerPeer bound the payloads of the frames that
	// pending connections are reading, charged before each is allocated.
	maxBytes, maxBytesPerPeer int

	mu       sync.Mutex
	open     map[*conn]bool // true while pending
	pending  map[string]int // pending connections by peer
	npending int
	bytes    map[string]int // payload bytes charged to pending connections, by peer
	nbytes   int
	sessions map[string]int // sessions and copies of confined peers
	closing  bool
	// starting counts the connections admitted to start a session whose
	// session is not yet tracked for Shutdown. It is added to under mu
	// while not closing, so that once shutdown has set closing, Shutdown
	// can wait for it and find every session admitted before.
	starting sync.WaitGroup
	// Warnings about a peer's connections are logged at most once a
	// second per peer, so that a peer that connects in a loop, or sends
	// garbage in a loop, cannot fill the disk with corkd's log.
	loggedAt map[string]time.Time
	unlogged map[string]int
}

// conn is one connection in the table: a key for any connection, which
// need not be comparable itself.
type conn struct {
	c        io.Closer
	peer     string
	confined bool // the peer runs sessions only as itself (--allow-uid)
	holds    bool // one of the peer's sessions is counted on this connection
	charged  int  // payload bytes of the frame it reads, while pending
}

func newConns(cfg *Config) *conns {
	return &conns{max: cfg.MaxPending, maxPerPeer: cfg.MaxPendingPerPeer, maxSessionsPerPeer: cfg.MaxSessionsPerUID,
		maxBytes: cfg.MaxPendingBytes, maxBytesPerPeer: cfg.MaxPendingBytesPerPeer,
		open: map[*conn]bool{}, pending: map[string]int{}, bytes: map[string]int{}, sessions: map[string]int{},
		loggedAt: map[string]time.Time{}, unlogged: map[string]int{}}
}

// warningDue counts a warning about peer's connections (a refusal, a
// handshake timed out) and reports whether to log it now, and how many
// warnings the line stands for. The tables hold only peers that the
// listeners admitted: a few uids or CIDs.
func (t *conns) warningDue(peer string) (bool, int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.unlogged[peer]++
	if time.Since(t.loggedAt[peer]) < time.Second {
		return false, 0
	}
	n := t.unlogged[peer]
	t.loggedAt[peer] = time.Now()
	delete(t.unlogged, peer)
	return true, n
}

// add counts c in as pending for peer, or returns why it may not be: a
// limit is reached, or the agent is shutting down.
func (t *conns) add(c io.Closer, peer string, confined bool) (*conn, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.closing:
		return nil, errShuttingDown
	case t.pending[peer] >= t.maxPerPeer:
		return nil, fmt.Errorf("corkd already has %d connections from %s that have not finished their handshake, "+
			"the most it takes from one peer (corkd serve --max-pending-per-uid)", t.pending[peer], peer)
	case t.npending >= t.max:
		return nil, fmt.Errorf("corkd already has %d connections that have not finished their handshake, "+
			"the most it takes (corkd serve --max-pending)", t.npending)
	}
	e := &conn{c: c, peer: peer, confined: confined}
	t.open[e] = true
	t.pending[peer]++
	t.npending++
	return e, nil
}

var errShuttingDown = fmt.Errorf("corkd is shutting down")

// admit moves e from pending to admitted. It reports false when the agent
// is shutting down. When starts is set, e is admitted to start a session,
// counted in starting: the caller calls started once its session is
// tracked, or failed to start.
func (t *conns) admit(e *conn, starts bool) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closing {
		return false
	}
	if starts {
		t.starting.Add(1)
	}
	t.unpendLocked(e)
	t.open[e] = false
	return true
}

// started ends the count that admit took for a session starting.
func (t *conns) started() { t.starting.Done() }

// remove forgets e, pending or admitted, and the session counted on it.
func (t *conns) remove(e *conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.open[e] {
		t.unpendLocked(e)
	}
	delete(t.open, e)
	if e.holds {
		e.holds = false
		t.endSessionLocked(e.peer)
	}
}

// setCloser has Shutdown close c instead of e's connection: what serves
// the connection now, when it is no longer the agent. It reports false,
// and changes nothing, once Shutdown has begun: the caller closes c.
func (t *conns) setCloser(e *conn, c io.Closer) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closing {
		return false
	}
	e.c = c
	return true
}

// takeSession counts a session, or a copy, of e's peer in, on e, or
// returns why it may not run: a confined peer is at its limit. Other peers
// are bounded by the agent's limit of sessions alone.
func (t *conns) takeSession(e *conn) error {
	if !e.confined {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if n := t.sessions[e.peer]; n >= t.maxSessionsPerPeer {
		return fmt.Errorf("%s already has %d sessions, the most corkd runs at once for a uid admitted with --allow-uid "+
			"(corkd serve --max-sessions-per-uid)", e.peer, n)
	}
	t.sessions[e.peer]++
	e.holds = true
	return nil
}

// giveSession moves the session counted on e to the session itself, which
// may outlive the connection: the caller calls end when it ends.
func (t *conns) giveSession(e *conn) (end func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !e.holds {
		return func() {}
	}
	e.holds = false
	return sync.OnceFunc(func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		t.endSessionLocked(e.peer)
	})
}

func (t *conns) endSessionLocked(peer string) {
	if t.sessions[peer]--; t.sessions[peer] == 0 {
		delete(t.sessions, peer)
	}
}

func (t *conns) unpendLocked(e *conn) {
	t.npending--
	if t.pending[e.peer]--; t.pending[e.peer] == 0 {
		delete(t.pending, e.peer)
	}
	t.unchargeLocked(e)
}

// charge charges the n payload bytes of the frame pending e is about to
// read, in place of its previous frame's, which it is done with; or
// returns why it may not: its peer's budget or the total would be
// exceeded.
func (t *conns) charge(e *conn, n int) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.open[e] {
		return nil // admitted: bounded by its session's limits
	}
	t.unchargeLocked(e)
	switch {
	case t.bytes[e.peer]+n > t.maxBytesPerPeer:
		return fmt.Errorf("a frame of %d bytes would take the connections from %s that have not finished their handshake "+
			"past %d bytes, the most corkd holds for one peer", n, e.peer, t.maxBytesPerPeer)
	case t.nbytes+n > t.maxBytes:
		return fmt.Errorf("a frame of %d bytes would take the connections that have not finished their handshake "+
			"past %d bytes, the most corkd holds for them", n, t.maxBytes)
	}
	e.charged = n
	t.bytes[e.peer] += n
	t.nbytes += n
	return nil
}

func (t *conns) unchargeLocked(e *conn) {
	if e.charged == 0 {
		return
	}
	t.nbytes -= e.charged
	if t.bytes[e.peer] -= e.charged; t.bytes[e.peer] == 0 {
		delete(t.bytes, e.peer)
	}
	e.charged = 0
}

// shutdown refuses every connection from now on and closes the pending
// ones, which have nothing to finish.
func (t *conns) shutdown() {
	t.mu.Lock()
	t.closing = true
	pending := t.listLocked(true)
	t.mu.Unlock()
	for _, c := range pending {
		c.Close()
	}
}

// closeAdmitted closes the connections admitted and still open: copies,
// and clients that outlived their session.
func (t *conns) closeAdmitted() {
	t.mu.Lock()
	admitted := t.listLocked(false)
	t.mu.Unlock()
	for _, c := range admitted {
		c.Close()
	}
}

// listLocked lists the connections pending, or admitted.
func (t *conns) listLocked(pending bool) []io.Closer {
	var cs []io.Closer
	for e, p := range t.open {
		if p == pending {
			cs = append(cs, e.c)
		}
	}
	return cs
}

// count reports the connections pending now.
func (t *conns) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.npending
}
