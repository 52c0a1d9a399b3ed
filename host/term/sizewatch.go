package term

import (
	"sync"

	"github.com/corkvm/cork/protocol"
)

// sizeWatch reads a terminal's size and hands it on. A SIGWINCH can reach
// it by two paths at once (winch_linux.go); the lock makes the size read
// last the size put last, so a burst always ends at the newest size.
type sizeWatch struct {
	fd  int
	put func(protocol.WindowSize)
	mu  sync.Mutex
}

func (w *sizeWatch) update() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if s, err := Size(w.fd); err == nil && s.Valid() {
		w.put(s)
	}
}
