package agent

import (
	"testing"
	"time"
)

// TestRefusalsLoggedOncePerSecond: a peer refused in a loop gets one log
// line a second, which counts the refusals it stands for; another peer's
// first refusal is logged at once.
func TestRefusalsLoggedOncePerSecond(t *testing.T) {
	c := newConns(&Config{MaxPending: 1, MaxPendingPerPeer: 1, MaxSessionsPerUID: 1})
	if ok, n := c.warningDue("uid 1000"); !ok || n != 1 {
		t.Fatalf("first refusal: log %v, count %d", ok, n)
	}
	for range 1000 {
		if ok, _ := c.warningDue("uid 1000"); ok {
			t.Fatal("logged twice within a second")
		}
	}
	if ok, n := c.warningDue("uid 1001"); !ok || n != 1 {
		t.Fatalf("another peer's first refusal: log %v, count %d", ok, n)
	}
	c.loggedAt["uid 1000"] = c.loggedAt["uid 1000"].Add(-2 * time.Second)
	if ok, n := c.warningDue("uid 1000"); !ok || n != 1001 {
		t.Fatalf("a second later: log %v, count %d, want 1001", ok, n)
	}
}
