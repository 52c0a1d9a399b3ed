package client

import "sync"

// credit counts the stdin bytes the host may still send: the agent's stdin
// window, less what is in flight, plus what the agent acknowledges. A
// program that does not read its input then holds back only stdin, never
// the resize and signal frames behind a paste.
//
// A kept session's connection can be replaced (link.swap): each window is
// the window of one connection, numbered as the link numbers them, and
// credit taken from one connection's window is never spent on another's.
type credit struct {
	mu     sync.Mutex
	cond   sync.Cond
	avail  int
	gen    int // the connection whose window this is
	closed bool
}

func newCredit() *credit {
	c := &credit{}
	c.cond.L = &c.mu
	return c
}

// take waits for credit and takes at most max of it, from the window of
// connection gen; n is 0 when closed.
func (c *credit) take(max int) (n, gen int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.avail == 0 && !c.closed {
		c.cond.Wait()
	}
	if c.closed {
		return 0, c.gen
	}
	n = min(c.avail, max)
	c.avail -= n
	return n, c.gen
}

// give adds n bytes the agent acknowledged on the current connection.
func (c *credit) give(n int) {
	if n == 0 {
		return
	}
	c.mu.Lock()
	c.avail += n
	c.mu.Unlock()
	c.cond.Signal()
}

// putBack returns the unused part of a take from connection gen's window:
// to that window, or nowhere when it was replaced since (reset).
func (c *credit) putBack(n, gen int) {
	c.mu.Lock()
	if gen == c.gen {
		c.avail += n
	}
	c.mu.Unlock()
	if n > 0 {
		c.cond.Signal()
	}
}

// reset makes n the credit: the window of connection gen, which nothing
// sent yet counts against.
func (c *credit) reset(n, gen int) {
	c.mu.Lock()
	c.avail, c.gen = n, gen
	c.mu.Unlock()
	c.cond.Broadcast()
}

// waitPast waits until the credit is for a connection after gen, or
// closed; it reports false when closed.
func (c *credit) waitPast(gen int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.gen == gen && !c.closed {
		c.cond.Wait()
	}
	return !c.closed
}

func (c *credit) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cond.Broadcast()
}
