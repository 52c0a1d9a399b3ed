package agent_test

import (
	"runtime/metrics"
	"testing"
	"time"

	"github.com/corkvm/cork/guest/agent"
	"github.com/corkvm/cork/protocol"
)

// forcedCollections is how many full collections the process has forced
// (runtime.GC, debug.FreeOSMemory).
func forcedCollections() uint64 {
	s := []metrics.Sample{{Name: "/gc/cycles/forced:gc-cycles"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestMemoryFreedWhenIdle: a host running one short command after another
// does not pay for a full collection per session, and the memory of a busy
// spell still goes back to the system once the agent is idle.
func TestMemoryFreedWhenIdle(t *testing.T) {
	srv := newServer(t, agent.Config{FreeMemoryAfter: time.Hour})
	before := forcedCollections()
	for range 3 {
		if r := run(t, srv, protocol.Exec{Argv: []string{"true"}}, nil); r.exit.Code != 0 {
			t.Fatalf("true: %+v", r.exit)
		}
	}
	if n := forcedCollections() - before; n != 0 {
		t.Fatalf("3 sessions in a row forced %d full collections", n)
	}

	srv = newServer(t, agent.Config{FreeMemoryAfter: 10 * time.Millisecond})
	before = forcedCollections()
	run(t, srv, protocol.Exec{Argv: []string{"true"}}, nil)
	waitFor(t, "the idle agent to return its memory", 10*time.Second, func() bool { return forcedCollections() > before })
}
