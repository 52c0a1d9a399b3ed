package agent_test

import (
	"runtime"
	"testing"
	"time"

	"github.com/corkvm/cork/guest/agent"
	"github.com/corkvm/cork/protocol"
)

// TestForgottenSessionsLeaveNoGoroutines: the keeper corkd lives for days;
// each kept session forgotten left its screen's goroutine (and with it
// the emulator) behind. Sessions forgotten at once (their exit seen) and
// after rm both count.
func TestForgottenSessionsLeaveNoGoroutines(t *testing.T) {
	srv := newServer(t, agent.Config{})
	run := func(name string, detach bool) {
		p := dial(t, srv, -1)
		defer p.Conn.Close()
		st := p.Exec(keep(name, sh("printf '\\033[31mhi\\033[6n'; read x")...))
		readUntil(t, p, "hi")
		if !detach {
			p.Send(protocol.TypeSignal, &protocol.Signal{Name: "KILL"})
			p.Output(nil)
			return
		}
		p.Conn.Close()
		waitFor(t, "the session to be detached", 5*time.Second, func() bool {
			l := list(t, srv, -1)
			return len(l) == 1 && !l[0].Attached
		})
		q := dial(t, srv, -1)
		q.Send(protocol.TypeKill, &protocol.Kill{Session: st.Session, Signal: "KILL"})
		q.Expect(protocol.TypeDone)
		waitFor(t, "the session to exit", 5*time.Second, func() bool {
			l := list(t, srv, -1)
			return len(l) == 1 && l[0].State == protocol.StateExited
		})
		r := dial(t, srv, -1)
		r.Send(protocol.TypeRemove, &protocol.Remove{Session: st.Session})
		r.Expect(protocol.TypeDone)
	}
	run("warm-up", false)
	waitFor(t, "no kept sessions", 5*time.Second, func() bool { return len(list(t, srv, -1)) == 0 })
	before := runtime.NumGoroutine()
	for i := range 40 {
		run("", i%2 == 0)
	}
	waitFor(t, "the goroutines to return", 10*time.Second, func() bool {
		return len(list(t, srv, -1)) == 0 && runtime.NumGoroutine() <= before+5
	})
}

// TestLargeRestoreIsSplit: a screen in colour as large as a screen is kept
// draws in more than a frame; the attach got EOF and nothing was logged.
func TestLargeRestoreIsSplit(t *testing.T) {
	srv := newServer(t, agent.Config{KeepBuffer: 4 << 20})
	p := dial(t, srv, -1)
	req := keep("big", "awk", `BEGIN { for (i = 0; i < 65000; i++) printf "\033[38;2;%d;%d;7;48;2;%d;1;2m#", i%256, int(i/256), i%199; print "done"; system("sleep 600") }`)
	req.Size = protocol.WindowSize{Cols: 216, Rows: 300}
	p.Exec(req)
	readUntil(t, p, "done")
	p.Conn.Close()
	q := dial(t, srv, -1)
	attach(t, q, protocol.Attach{Session: "big", Size: req.Size})
	restored := 0
	for restored <= protocol.MaxPayload {
		typ, payload, err := q.R.Next()
		if err != nil {
			t.Fatalf("after %d bytes of Restore: %v", restored, err)
		}
		if typ == protocol.TypeRestore {
			restored += len(payload)
		}
	}
	q.Send(protocol.TypeSignal, &protocol.Signal{Name: "KILL"})
}
