package agent_test

import (
	"strings"
	"testing"
	"time"

	"github.com/corkvm/cork/guest/agent"
	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/prototest"
)

// TestRestoreHistoryOncePerTerminal: an attach's Restore carries the lines
// scrolled off the screen only when they add something to the attaching
// terminal: not when it is the terminal the last client showed the session
// on and the program wrote nothing since; yes from another terminal, or
// after new output.
func TestRestoreHistoryOncePerTerminal(t *testing.T) {
	srv := newServer(t, agent.Config{})
	p := dial(t, srv, -1)
	req := keep("hist", sh(`for i in $(seq 1 60); do echo "L$i."; done; echo ready; trap 'echo got-usr1' USR1; while :; do sleep 0.05; done`)...)
	req.Terminal = "term-A"
	p.Exec(req)
	readUntil(t, p, "ready")

	// leave ends the connection and waits for corkd to see the client go.
	leave := func(c *prototest.Peer) {
		t.Helper()
		c.Conn.Close()
		waitFor(t, "the session to be detached", 5*time.Second, func() bool {
			l := list(t, srv, -1)
			return len(l) == 1 && !l[0].Attached
		})
	}
	// restore attaches from terminal and returns the connection and its
	// Restore frame.
	restore := func(terminal string) (*prototest.Peer, string) {
		t.Helper()
		c := dial(t, srv, -1)
		attach(t, c, protocol.Attach{Session: "hist", Size: protocol.WindowSize{Cols: 80, Rows: 24}, Terminal: terminal})
		return c, string(c.Expect(protocol.TypeRestore))
	}
	const history, screen = "L10.", "L60."
	leave(p)
	for _, step := range []struct {
		what, terminal string
		signal         bool // after leaving: output while detached
		history        bool
	}{
		{"the terminal the session started on", "term-A", false, false},
		{"another terminal", "term-B", false, true},
		{"that terminal again", "term-B", true, false},
		{"that terminal after output while detached", "term-B", false, true},
		{"a client that names no terminal", "", false, true},
		{"after a client that named none", "", false, true},
	} {
		c, r := restore(step.terminal)
		if !strings.Contains(r, screen) {
			t.Fatalf("%s: the Restore lacks the screen: %q", step.what, r)
		}
		if got := strings.Contains(r, history); got != step.history {
			t.Fatalf("%s: Restore with the lines scrolled off: %v, want %v", step.what, got, step.history)
		}
		leave(c)
		if step.signal {
			k := dial(t, srv, -1)
			k.Send(protocol.TypeKill, &protocol.Kill{Session: "hist", Signal: "USR1"})
			k.Expect(protocol.TypeDone)
			k.Conn.Close()
			waitFor(t, "the output while detached", 5*time.Second, func() bool {
				q := dial(t, srv, -1)
				defer q.Conn.Close()
				q.Send(protocol.TypePeek, &protocol.Peek{Session: "hist"})
				var snap protocol.Snapshot
				q.Decode(protocol.TypeSnapshot, q.Expect(protocol.TypeSnapshot), &snap)
				return strings.Contains(strings.Join(snap.Lines, "\n"), "got-usr1")
			})
		}
	}
}
