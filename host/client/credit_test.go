package client

import (
	"testing"
	"time"
)

func TestCreditTakesAtMostWhatIsGiven(t *testing.T) {
	c := newCredit()
	c.give(100)
	if n, _ := c.take(30); n != 30 {
		t.Fatalf("take(30) of 100: %d", n)
	}
	if n, _ := c.take(1000); n != 70 {
		t.Fatalf("take(1000) of the 70 left: %d", n)
	}
	c.give(0) // no credit: no wake-up, nothing changes
	got := make(chan int, 1)
	go func() { n, _ := c.take(50); got <- n }()
	select {
	case n := <-got:
		t.Fatalf("take with no credit returned %d at once", n)
	case <-time.After(20 * time.Millisecond):
	}
	c.give(20) // an acknowledgement wakes the waiting taker
	select {
	case n := <-got:
		if n != 20 {
			t.Fatalf("take after give(20): %d", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("give did not wake a waiting take")
	}
}

func TestCreditCloseEndsWaiting(t *testing.T) {
	c := newCredit()
	got := make(chan int, 1)
	go func() { n, _ := c.take(10); got <- n }()
	c.close()
	select {
	case n := <-got:
		if n != 0 {
			t.Fatalf("take after close: %d, want 0 (the session is over)", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("close did not end a waiting take")
	}
	if n, _ := c.take(10); n != 0 {
		t.Fatalf("take on a closed credit: %d", n)
	}
}

// TestCreditOfAReplacedWindowIsNotSpent: the unused part of a take from a
// connection's window, put back after the window was replaced by a new
// connection's, adds nothing to the new one.
func TestCreditOfAReplacedWindowIsNotSpent(t *testing.T) {
	c := newCredit()
	c.reset(1000, 0)
	n, gen := c.take(1000)
	c.reset(1000, 1) // a resume: the new connection's window
	c.putBack(n-100, gen)
	if n, gen := c.take(5000); n != 1000 || gen != 1 {
		t.Fatalf("took %d of connection %d's window, want all 1000 of connection 1's and no more", n, gen)
	}
}
