package agent

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"time"
)

// The stream limits per uid and in all (--max-streams-per-uid,
// --max-streams) hold across corkd and its forwarding workers: corkd keeps
// the counts, and a worker takes streams from them in leases of a few,
// over a socket of its own (fd 5), so that most streams cost it no round
// trip. A worker keeps fewer than 2*leaseBatch of a uid's streams unused,
// and none once none has been in use for leaseIdle; corkd takes back
// whatever a worker held when it ends.

// streamCounter counts the streams of each uid within the limits.
type streamCounter interface {
	take(uid uint32, perUID, total int) (release func(), err error)
}

// leaseBatch is how many streams a worker asks for at a time.
const leaseBatch = 4

// A lease message: op, uid, count, big-endian uint32s.
const (
	leaseTake  = 1 // worker: n more streams of uid, please
	leaseGive  = 2 // worker: n streams of uid back
	leaseGrant = 3 // corkd: n granted (0: refused, why in the uid field)

	refusedTotal  = 1 // the total is at --max-streams
	refusedPerUID = 2 // the uid is at --max-streams-per-uid
	leaseMsgSize  = 12
)

func putLease(op, uid, n uint32) []byte {
	var b [leaseMsgSize]byte
	binary.BigEndian.PutUint32(b[0:], op)
	binary.BigEndian.PutUint32(b[4:], uid)
	binary.BigEndian.PutUint32(b[8:], n)
	return b[:]
}

func readLease(r io.Reader) (op, uid, n uint32, err error) {
	var b [leaseMsgSize]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, 0, 0, err
	}
	return binary.BigEndian.Uint32(b[0:]), binary.BigEndian.Uint32(b[4:]), binary.BigEndian.Uint32(b[8:]), nil
}

// takeN counts up to n more streams of uid, as many as the limits allow,
// and returns how many; none at a limit, and which (refusedTotal or
// refusedPerUID).
func (u *uidStreams) takeN(uid uint32, n, perUID, total int) (got int, refused uint32) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.n == nil {
		u.n = map[uint32]int{}
	}
	if u.total >= total {
		return 0, refusedTotal
	}
	if u.n[uid] >= perUID {
		return 0, refusedPerUID
	}
	n = min(n, total-u.total, perUID-u.n[uid])
	u.n[uid] += n
	u.total += n
	return n, 0
}

// giveN uncounts n streams of uid.
func (u *uidStreams) giveN(uid uint32, n int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.total -= n
	if u.n[uid] -= n; u.n[uid] <= 0 {
		delete(u.n, uid)
	}
}

// refusal is the error for a stream refused at a limit.
func refusal(refused, uid uint32, perUID, total int) error {
	if refused == refusedTotal {
		return errTotalStreams(total)
	}
	return errUIDStreams(uid, perUID)
}

func errTotalStreams(total int) error {
	return fmt.Errorf("corkd has %d streams open, its limit (corkd serve --max-streams)", total)
}

func errUIDStreams(uid uint32, perUID int) error {
	return fmt.Errorf("uid %d already has %d streams open, the most corkd keeps for one uid (corkd serve --max-streams-per-uid)", uid, perUID)
}

// serveLeases answers one worker's leases on c until c ends, then gives
// back everything the worker held. A message that is not a take or a
// give within what the worker holds ends it too.
func (s *Server) serveLeases(c io.ReadWriter) {
	held := map[uint32]int{}
	defer func() {
		for uid, n := range held {
			s.streamsPerUID.giveN(uid, n)
		}
	}()
	fc := &s.cfg.Forward
	for {
		op, uid, n, err := readLease(c)
		if err != nil {
			return
		}
		switch {
		case op == leaseTake && n >= 1 && n <= leaseBatch:
			got, refused := s.streamsPerUID.takeN(uid, int(n), fc.MaxStreamsPerUID, fc.MaxStreams)
			held[uid] += got
			if _, err := c.Write(putLease(leaseGrant, refused, uint32(got))); err != nil {
				return
			}
		case op == leaseGive && n >= 1 && int(n) <= held[uid]:
			held[uid] -= int(n)
			s.streamsPerUID.giveN(uid, int(n))
		default:
			s.log.Warn("forwarding worker: a lease message out of bounds; ending its leases", "op", op, "uid", uid, "n", n)
			return
		}
	}
}

// leases is a worker's streamCounter: streams leased from corkd.
type leases struct {
	rpc  sync.Mutex // one round trip on c at a time
	c    io.ReadWriter
	give chan [2]uint32 // uid, n: returned by one goroutine, off the caller's path

	mu   sync.Mutex
	held map[uint32]*lease
}

// lease is what a worker holds of a uid's streams: held leased from
// corkd, used by streams open now.
type lease struct {
	held, used int
	idleSince  time.Time   // when used last fell to 0
	idle       *time.Timer // gives the lease back once idle for leaseIdle; nil when none is set
}

// leaseIdle is how long a worker keeps a uid's leased streams once none
// is in use: a burst of connections pays one round trip to corkd, and
// streams leased but unused count against the limits no longer than
// this (a connection that failed, or another uid's to a -R listener).
const leaseIdle = 100 * time.Millisecond

func newLeases(c io.ReadWriter) *leases {
	l := &leases{c: c, give: make(chan [2]uint32, 64), held: map[uint32]*lease{}}
	go func() {
		for g := range l.give {
			l.rpc.Lock()
			l.c.Write(putLease(leaseGive, g[0], g[1]))
			l.rpc.Unlock()
		}
	}()
	return l
}

func (l *leases) take(uid uint32, perUID, total int) (func(), error) {
	if !l.useHeld(uid) {
		if err := l.lease(uid, perUID, total); err != nil {
			return nil, err
		}
	}
	var once sync.Once
	return func() { once.Do(func() { l.release(uid) }) }, nil
}

// useHeld takes one of the streams held for uid, if one is unused.
func (l *leases) useHeld(uid uint32) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if h := l.held[uid]; h != nil && h.used < h.held {
		h.used++
		return true
	}
	return false
}

// lease asks corkd for more of uid's streams and uses one, unless a
// lease that another stream asked for meanwhile brought one: streams that
// open at once wait for one round trip, not one each.
func (l *leases) lease(uid uint32, perUID, total int) error {
	l.rpc.Lock()
	if l.useHeld(uid) {
		l.rpc.Unlock()
		return nil
	}
	_, err := l.c.Write(putLease(leaseTake, uid, leaseBatch))
	var op, why, n uint32
	if err == nil {
		op, why, n, err = readLease(l.c)
	}
	l.rpc.Unlock()
	switch {
	case err != nil:
		return fmt.Errorf("asking corkd for a stream: %w", err)
	case op != leaseGrant || n > leaseBatch:
		return fmt.Errorf("asking corkd for a stream: answer %d of %d", op, n)
	case n == 0:
		return refusal(why, uid, perUID, total)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	h := l.held[uid]
	if h == nil {
		h = &lease{}
		l.held[uid] = h
	}
	h.held += int(n)
	h.used++
	return nil
}

// release ends one of uid's streams; past 2*leaseBatch unused, a batch
// goes back to corkd, and all of them once none has been in use for
// leaseIdle.
func (l *leases) release(uid uint32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	h := l.held[uid]
	h.used--
	if h.held-h.used >= 2*leaseBatch && l.giveBack(uid, leaseBatch) {
		h.held -= leaseBatch
	}
	if h.used == 0 {
		h.idleSince = time.Now()
		if h.idle == nil {
			h.idle = time.AfterFunc(leaseIdle, func() { l.returnIdle(uid, h) })
		}
	}
}

// returnIdle gives h, uid's lease, back to corkd if none of it has been
// in use for leaseIdle.
func (l *leases) returnIdle(uid uint32, h *lease) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch wait := leaseIdle - time.Since(h.idleSince); {
	case l.held[uid] != h:
	case h.used > 0:
		h.idle = nil // the next release to none sets it again
	case wait > 0:
		h.idle.Reset(wait)
	case l.giveBack(uid, h.held):
		delete(l.held, uid)
	default:
		h.idle.Reset(leaseIdle) // the queue is full: later
	}
}

// giveBack queues n of uid's streams for corkd, and reports false when
// the queue is full.
func (l *leases) giveBack(uid uint32, n int) bool {
	select {
	case l.give <- [2]uint32{uid, uint32(n)}:
		return true
	default:
		return false
	}
}
