//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/corkvm/cork/protocol"
)

// counter is root's kept session printing a number every 10 ms, read by
// root, who cuts the connection and resumes every second. It checks
// that every resume inside the buffer continues the byte stream exactly
// (each number once, in order) and times the longest pause in the output.
type counter struct {
	sock, id string
	every    time.Duration

	mu        sync.Mutex
	seen      uint64 // output bytes read, the next resume's offset
	partial   []byte // the line being read
	next      int    // the number the next line must hold; -1: any
	lines     int
	last      time.Time // when output last came
	maxPause  time.Duration
	pauseAt   time.Time // when the longest pause ended
	resumes   int
	redrawn   int      // attaches outside the buffer: a redraw, not a resume
	attachErr []string // first attach failures
	broken    string   // the first number lost or doubled
}

const counterProgram = `i=0; while :; do echo $i; i=$((i+1)); sleep 0.01; done`

// startCounter starts the session and returns once its first line came.
func startCounter(sock string, every time.Duration) (*counter, *peer, error) {
	p, st, err := keep(sock, "chaos-counter", smallSize, "sh", "-c", counterProgram)
	if err != nil {
		return nil, nil, err
	}
	c := &counter{sock: sock, id: st.Session, every: every, next: 0, last: time.Now()}
	deadline := time.Now().Add(opTimeout)
	for c.linesRead() == 0 {
		if time.Now().After(deadline) {
			p.close()
			return nil, nil, fmt.Errorf("root's counter printed nothing in %v", opTimeout)
		}
		c.readFor(p, 100*time.Millisecond)
	}
	return c, p, nil
}

// run reads through p, then resumes every c.every, until ctx is done.
func (c *counter) run(ctx context.Context, p *peer) {
	for ctx.Err() == nil {
		if p != nil {
			c.readFor(p, c.every)
			p.close()
		}
		var err error
		if p, err = c.resume(); err != nil {
			c.mu.Lock()
			if len(c.attachErr) < 5 {
				c.attachErr = append(c.attachErr, err.Error())
			}
			c.mu.Unlock()
			p = nil
			time.Sleep(100 * time.Millisecond)
		}
	}
	if p != nil {
		p.close()
	}
}

// resume attaches again from the bytes seen so far.
func (c *counter) resume() (*peer, error) {
	p, err := dialHello(c.sock)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	from := c.seen
	c.mu.Unlock()
	var at protocol.Attached
	if err := p.send(protocol.TypeAttach, &protocol.Attach{Session: c.id, Resume: &from, Size: smallSize}); err != nil {
		p.close()
		return nil, err
	}
	if err := p.expect(protocol.TypeAttached, opTimeout, &at); err != nil {
		p.close()
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if at.Resumed && at.From == from {
		c.resumes++
		return p, nil
	}
	// Outside the buffer: a redraw follows, and the numbers start again
	// from wherever the output is now.
	c.redrawn++
	c.seen, c.partial, c.next = at.From, nil, -1
	return p, nil
}

// readFor reads output frames for d.
func (c *counter) readFor(p *peer, d time.Duration) {
	p.conn.SetReadDeadline(time.Now().Add(d))
	for {
		t, b, err := p.r.NextShared()
		if err != nil {
			return
		}
		if t == protocol.TypeStdout {
			c.output(b)
		}
	}
}

// output takes a frame's bytes: times the gap since the last and checks
// each whole line.
func (c *counter) output(b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if gap := now.Sub(c.last); gap > c.maxPause {
		c.maxPause, c.pauseAt = gap, now
	}
	c.last = now
	c.seen += uint64(len(b))
	c.partial = append(c.partial, b...)
	for {
		i := bytes.IndexByte(c.partial, '\n')
		if i < 0 {
			return
		}
		line := bytes.TrimRight(c.partial[:i], "\r")
		c.partial = c.partial[i+1:]
		c.line(string(line))
	}
}

func (c *counter) line(l string) {
	v, err := strconv.Atoi(l)
	switch {
	case err != nil && c.broken == "":
		c.broken = fmt.Sprintf("line %q after %d is not a number", l, c.next-1)
	case err != nil:
	case c.next >= 0 && v != c.next && c.broken == "":
		c.broken = fmt.Sprintf("after %d came %d: output lost or doubled in a resume", c.next-1, v)
	}
	if err == nil {
		c.next = v + 1
	}
	c.lines++
}

func (c *counter) linesRead() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lines
}

// pause is the longest gap in the output, the one still open at until
// (zero: now) included.
func (c *counter) pause(until time.Time) time.Duration {
	if until.IsZero() {
		until = time.Now()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return max(c.maxPause, until.Sub(c.last))
}
