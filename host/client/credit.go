package client

import "sync"

// credit counts the stdin bytes the host may still send: the agent's stdin
// window, less what is in flight, plus what the agent acknowledges. A
// program that does not read its input then holds back only stdin, never
// the resize and signal frames behind a paste.
type credit struct {
	mu     sync.Mutex
	cond   sync.Cond
	avail  int
	closed bool
}

func newCredit() *credit {
	c := &credit{}
	c.cond.L = &c.mu
	return c
}

// take waits for credit and takes at most max of it; 0 means closed.
func (c *credit) take(max int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.avail == 0 && !c.closed {
		c.cond.Wait()
	}
	if c.closed {
		return 0
	}
	n := min(c.avail, max)
	c.avail -= n
	return n
}

func (c *credit) give(n int) {
	if n == 0 {
		return
	}
	c.mu.Lock()
	c.avail += n
	c.mu.Unlock()
	c.cond.Signal()
}

// reset makes n the credit: a new connection's window, which nothing sent
// yet counts against.
func (c *credit) reset(n int) {
	c.mu.Lock()
	c.avail = n
	c.mu.Unlock()
	c.cond.Broadcast()
}

func (c *credit) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cond.Broadcast()
}
