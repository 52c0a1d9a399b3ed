package agent_test

import (
	"slices"
	"testing"
	"time"

	"github.com/corkvm/cork/guest/agent"
	"github.com/corkvm/cork/protocol"
)

// Kept sessions against peers that misbehave: clients that never read,
// that race each other, that fill the table.

// answerWithin sends one request about kept sessions as uid and returns
// the type and payload of the answer, failing the test when none comes
// within d: a request that waits on another client's connection.
func answerWithin(t *testing.T, srv *agent.Server, uid int, d time.Duration, typ protocol.Type, v any) (protocol.Type, []byte) {
	t.Helper()
	p := dial(t, srv, uid)
	p.Send(typ, v)
	type answer struct {
		t   protocol.Type
		p   []byte
		err error
	}
	got := make(chan answer, 1)
	go func() {
		t, p, err := p.R.Next()
		got <- answer{t, slices.Clone(p), err}
	}()
	select {
	case a := <-got:
		if a.err != nil {
			t.Fatalf("%s: %v", typ, a.err)
		}
		return a.t, a.p
	case <-time.After(d):
		t.Fatalf("%s got no answer in %v", typ, d)
	}
	panic("unreachable")
}

func listWithin(t *testing.T, srv *agent.Server, d time.Duration) []protocol.SessionInfo {
	t.Helper()
	typ, p := answerWithin(t, srv, -1, d, protocol.TypeList, nil)
	var ss protocol.Sessions
	if err := protocol.Decode(typ, p, &ss); err != nil {
		t.Fatalf("list answered %s: %v", typ, err)
	}
	return ss.Sessions
}

func peekWithin(t *testing.T, srv *agent.Server, session string, d time.Duration) protocol.Snapshot {
	t.Helper()
	typ, p := answerWithin(t, srv, -1, d, protocol.TypePeek, &protocol.Peek{Session: session})
	var snap protocol.Snapshot
	if err := protocol.Decode(typ, p, &snap); err != nil {
		t.Fatalf("peek answered %s: %v", typ, err)
	}
	return snap
}

// TestAttachThatNeverReadsStallsNothing: a client, or a watcher, that
// attaches and never reads holds up neither the program nor cork ls, and
// is detached once a write to it has waited for the stall time.
func TestAttachThatNeverReadsStallsNothing(t *testing.T) {
	agent.SetClientStall(t, 3*time.Second)
	srv := newServer(t, agent.Config{})
	p := dial(t, srv, -1)
	p.Exec(keep("busy", counter...))
	readUntil(t, p, "\n3\r")
	p.Conn.Close()
	waitFor(t, "the session to be detached", 5*time.Second, func() bool { return !listWithin(t, srv, 5*time.Second)[0].Attached })
	for _, readOnly := range []bool{false, true} {
		q := dial(t, srv, -1)
		q.Send(protocol.TypeAttach, &protocol.Attach{Session: "busy", ReadOnly: readOnly})
		// q reads nothing from here on.
		waitFor(t, "the attach to count", 5*time.Second, func() bool {
			l := listWithin(t, srv, 2*time.Second)
			return l[0].Attached || l[0].Watchers > 0
		})
		before := peekWithin(t, srv, "busy", 2*time.Second)
		waitFor(t, "the program to go on printing", 2*time.Second, func() bool {
			return !slices.Equal(peekWithin(t, srv, "busy", 2*time.Second).Lines, before.Lines)
		})
		waitFor(t, "the client that does not read to be detached", 10*time.Second, func() bool {
			l := listWithin(t, srv, 2*time.Second)
			return !l[0].Attached && l[0].Watchers == 0
		})
	}
	r := dial(t, srv, -1)
	attach(t, r, protocol.Attach{Session: "busy"})
	readUntil(t, r, "\n")
	r.Send(protocol.TypeSignal, &protocol.Signal{Name: "KILL"})
	r.Output(nil)
}
