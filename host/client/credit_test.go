package client

import (
	"testing"
	"time"
)

func TestCreditTakesAtMostWhatIsGiven(t *testing.T) {
	c := newCredit()
	c.give(100)
	if n := c.take(30); n != 30 {
		t.Fatalf("take(30) of 100: %d", n)
	}
	if n := c.take(1000); n != 70 {
		t.Fatalf("take(1000) of the 70 left: %d", n)
	}
	c.give(0) // no credit: no wake-up, nothing changes
	got := make(chan int, 1)
	go func() { got <- c.take(50) }()
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
	go func() { got <- c.take(10) }()
	c.close()
	select {
	case n := <-got:
		if n != 0 {
			t.Fatalf("take after close: %d, want 0 (the session is over)", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("close did not end a waiting take")
	}
	if n := c.take(10); n != 0 {
		t.Fatalf("take on a closed credit: %d", n)
	}
}
