package client

import (
	"sync"

	"github.com/corkvm/cork/protocol"
)

// SizeSlot holds the newest terminal size not yet sent. Put overwrites it,
// so a burst of resizes while a frame is being written ends with the newest
// size sent next, never queued behind stale ones (kubectl's size queue
// drops the newest when full), and the first one is sent at once, with no
// debounce (coder#6662 delayed every first resize). When the connection is
// free, Put writes the frame itself, from the goroutine that read the
// size: a resize then costs no hand-off to another goroutine.
type SizeSlot struct {
	mu    sync.Mutex
	size  protocol.WindowSize
	full  bool
	last  protocol.WindowSize // the last size sent
	ready chan struct{}
	// now, set while a session runs, writes the slot's size at once if the
	// connection is free, and reports whether it did.
	now func() bool
}

// NewSizeSlot returns an empty slot.
func NewSizeSlot() *SizeSlot { return &SizeSlot{ready: make(chan struct{}, 1)} }

// Put makes s the size to send next, replacing any size not yet sent, and
// sends it at once when it can.
func (sl *SizeSlot) Put(s protocol.WindowSize) {
	sl.mu.Lock()
	sl.size, sl.full = s, true
	now := sl.now
	sl.mu.Unlock()
	if now != nil && now() {
		return
	}
	select {
	case sl.ready <- struct{}{}:
	default: // a wake-up is already pending; it will take the new size
	}
}

// Ready is signalled after Put.
func (sl *SizeSlot) Ready() <-chan struct{} { return sl.ready }

// Take empties the slot and returns what it held.
func (sl *SizeSlot) Take() (protocol.WindowSize, bool) {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	s, ok := sl.size, sl.full
	sl.full = false
	return s, ok
}

// next empties the slot and returns the Resize payload of its size, or
// false when it holds none or the size last sent (the kernel would not
// signal an unchanged size either). Writers call it holding the
// connection's writer, so that sizes reach the stream in the order they
// were taken.
func (sl *SizeSlot) next() ([]byte, bool) {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if !sl.full {
		return nil, false
	}
	sl.full = false
	if sl.size == sl.last {
		return nil, false
	}
	sl.last = sl.size
	return protocol.EncodeResize(sl.size), true
}

func (sl *SizeSlot) setNow(now func() bool) {
	sl.mu.Lock()
	sl.now = now
	sl.mu.Unlock()
}

// sendSizes sends, over l, the sizes put in the slot while the connection
// was busy. A size that cannot be sent because a kept session is
// reconnecting is not retried: the attach that resumes it carries the
// newest size.
func sendSizes(l *link, sl *SizeSlot, initial protocol.WindowSize, done <-chan struct{}) {
	sl.mu.Lock()
	sl.last = initial
	sl.mu.Unlock()
	// The link keeps the newest size whether or not it can be sent now:
	// a reconnect's attach carries it.
	record := func() {
		if s, ok := sl.peek(); ok {
			l.setSize(s)
		}
	}
	sl.setNow(func() bool {
		record()
		tried, err := l.tryWriteOf(protocol.TypeResize, sl.next)
		return tried && err == nil
	})
	defer sl.setNow(nil)
	for {
		select {
		case <-sl.Ready():
		case <-done:
			return
		}
		record()
		if l.writeOf(protocol.TypeResize, sl.next) != nil && !l.resumable() {
			return
		}
	}
}

// peek returns the size in the slot without emptying it.
func (sl *SizeSlot) peek() (protocol.WindowSize, bool) {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	return sl.size, sl.full
}
