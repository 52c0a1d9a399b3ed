package bake

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// progress counts the bytes a bake moves and, when the bake takes longer
// than progressAfter, shows them on one line rewritten in place, as skopeo
// and docker do.
type progress struct {
	w       io.Writer
	start   time.Time
	mu      sync.Mutex
	bytes   int64
	shown   bool
	stopped bool
	done    chan struct{}
}

const (
	progressAfter = time.Second
	progressEvery = 250 * time.Millisecond
)

func newProgress(w io.Writer) *progress {
	p := &progress{w: w, start: time.Now(), done: make(chan struct{})}
	if w != nil {
		go p.loop()
	}
	return p
}

// Write counts n bytes moved.
func (p *progress) Write(b []byte) (int, error) {
	p.mu.Lock()
	p.bytes += int64(len(b))
	p.mu.Unlock()
	return len(b), nil
}

func (p *progress) loop() {
	t := time.NewTicker(progressEvery)
	defer t.Stop()
	for {
		select {
		case <-p.done:
			return
		case now := <-t.C:
			if now.Sub(p.start) >= progressAfter {
				p.show(now)
			}
		}
	}
}

func (p *progress) show(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	secs := now.Sub(p.start).Seconds()
	mib := float64(p.bytes) / (1 << 20)
	fmt.Fprintf(p.w, "\r\x1b[Kcork bake: %.1f MiB in %.1fs, %.1f MiB/s", mib, secs, mib/secs)
	p.shown = true
}

// clear removes the progress line, so that a note starts a line of its own.
func (p *progress) clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shown {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.shown = false
	}
}

// stop shows the final figures, if any were shown, and ends the line.
func (p *progress) stop() {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return
	}
	shown := p.shown
	p.mu.Unlock()
	if shown {
		p.show(time.Now())
	}
	p.mu.Lock()
	p.stopped = true
	if p.shown {
		fmt.Fprintln(p.w)
	}
	p.mu.Unlock()
	if p.w != nil {
		close(p.done)
	}
}
