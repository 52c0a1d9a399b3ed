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
type conns struct {
	max, maxPerPeer int

	mu       sync.Mutex
	open     map[io.Closer]string // connection: its peer, while pending
	admitted map[io.Closer]bool
	pending  map[string]int // pending connections by peer
	npending int
	closing  bool
	// Refusals are logged at most once a second per peer, so that a peer
	// that connects in a loop cannot fill the disk with corkd's log.
	loggedAt map[string]time.Time
	unlogged map[string]int
}

func newConns(max, maxPerPeer int) *conns {
	return &conns{max: max, maxPerPeer: maxPerPeer,
		open: map[io.Closer]string{}, admitted: map[io.Closer]bool{}, pending: map[string]int{},
		loggedAt: map[string]time.Time{}, unlogged: map[string]int{}}
}

// refusalToLog counts a refusal of peer's and reports whether to log it
// now, and how many refusals the line stands for. The tables hold only
// peers that were refused, which the listeners admitted: a few uids or
// CIDs.
func (t *conns) refusalToLog(peer string) (bool, int) {
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
func (t *conns) add(c io.Closer, peer string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.closing:
		return errShuttingDown
	case t.pending[peer] >= t.maxPerPeer:
		return fmt.Errorf("corkd already has %d connections from %s that have not finished their handshake, "+
			"the most it takes from one peer (corkd serve --max-pending-per-uid)", t.pending[peer], peer)
	case t.npending >= t.max:
		return fmt.Errorf("corkd already has %d connections that have not finished their handshake, "+
			"the most it takes (corkd serve --max-pending)", t.npending)
	}
	t.open[c] = peer
	t.pending[peer]++
	t.npending++
	return nil
}

var errShuttingDown = fmt.Errorf("corkd is shutting down")

// admit moves c from pending to admitted. It reports false when the agent
// is shutting down, or c has gone (its handshake deadline closed it).
func (t *conns) admit(c io.Closer) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	peer, ok := t.open[c]
	if !ok || t.closing {
		return false
	}
	t.unpendLocked(c, peer)
	t.admitted[c] = true
	return true
}

// remove forgets c, pending or admitted.
func (t *conns) remove(c io.Closer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if peer, ok := t.open[c]; ok {
		t.unpendLocked(c, peer)
	}
	delete(t.admitted, c)
}

func (t *conns) unpendLocked(c io.Closer, peer string) {
	delete(t.open, c)
	t.npending--
	if t.pending[peer]--; t.pending[peer] == 0 {
		delete(t.pending, peer)
	}
}

// shutdown refuses every connection from now on and closes the pending
// ones, which have nothing to finish.
func (t *conns) shutdown() {
	t.mu.Lock()
	t.closing = true
	var pending []io.Closer
	for c := range t.open {
		pending = append(pending, c)
	}
	t.mu.Unlock()
	for _, c := range pending {
		c.Close()
	}
}

// closeAdmitted closes the connections admitted and still open: copies,
// and clients that outlived their session.
func (t *conns) closeAdmitted() {
	t.mu.Lock()
	var cs []io.Closer
	for c := range t.admitted {
		cs = append(cs, c)
	}
	t.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
}

// count reports the connections pending now.
func (t *conns) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.npending
}
