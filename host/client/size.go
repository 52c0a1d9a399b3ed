package client

import (
	"sync"

	"github.com/corkvm/cork/protocol"
)

// SizeSlot holds the newest terminal size not yet sent. Put overwrites it,
// so a burst of resizes while a frame is being written ends with the newest
// size sent next, never queued behind stale ones (kubectl's size queue
// drops the newest when full), and the first one is sent at once, with no
// debounce (coder#6662 delayed every first resize).
type SizeSlot struct {
	mu    sync.Mutex
	size  protocol.WindowSize
	full  bool
	ready chan struct{}
}

// NewSizeSlot returns an empty slot.
func NewSizeSlot() *SizeSlot { return &SizeSlot{ready: make(chan struct{}, 1)} }

// Put makes s the size to send next, replacing any size not yet sent.
func (sl *SizeSlot) Put(s protocol.WindowSize) {
	sl.mu.Lock()
	sl.size, sl.full = s, true
	sl.mu.Unlock()
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

// sendSizes writes a Resize for each new size put in the slot, skipping a
// size equal to the last one sent (the kernel would not signal it either).
// A size that cannot be sent because a kept session is reconnecting is not
// retried: the attach that resumes it carries the newest size.
func sendSizes(l *link, sl *SizeSlot, last protocol.WindowSize, done <-chan struct{}) {
	for {
		select {
		case <-sl.Ready():
		case <-done:
			return
		}
		s, ok := sl.Take()
		if !ok || s == last {
			continue
		}
		l.setSize(s)
		if l.write(protocol.TypeResize, protocol.EncodeResize(s), false) != nil && !l.resumable() {
			return
		}
		last = s
	}
}
