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

// liveHeap is the heap in use after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestRemovedSessionsLetTheirMemoryGo: a kept session that exited while
// detached and was removed (cork rm) stayed in memory, screen and output
// and all, held by its linger's timer for the rest of the linger (24 hours
// by default); and once nothing ran, the memory let go went back to the
// system only with the next session's end.
func TestRemovedSessionsLetTheirMemoryGo(t *testing.T) {
	srv := newServer(t, agent.Config{FreeMemoryAfter: 10 * time.Millisecond})
	fill := `awk 'BEGIN { for (l = 0; l < 300; l++) { for (i = 0; i < 190; i++) printf "\033[38;2;%d;%d;7m%c", i, l, 97+(i+l)%26; printf "\r\n" }; print "done"; system("sleep 600") }'`
	before := liveHeap()
	var ids []string
	for range 5 {
		p := dial(t, srv, -1)
		req := keep("", "sh", "-c", fill)
		req.Size = protocol.WindowSize{Cols: 200, Rows: 50}
		st := p.Exec(req)
		readUntil(t, p, "done")
		p.Conn.Close()
		ids = append(ids, st.Session)
	}
	idle := forcedCollections()
	for _, id := range ids {
		q := dial(t, srv, -1)
		q.Send(protocol.TypePeek, &protocol.Peek{Session: id})
		q.Expect(protocol.TypeSnapshot)
		q = dial(t, srv, -1)
		q.Send(protocol.TypeKill, &protocol.Kill{Session: id, Signal: "KILL"})
		q.Expect(protocol.TypeDone)
	}
	waitFor(t, "the sessions to exit", 10*time.Second, func() bool {
		for _, s := range list(t, srv, -1) {
			if s.State != protocol.StateExited {
				return false
			}
		}
		return true
	})
	// The idle agent frees memory with two collections in a row.
	waitFor(t, "the idle agent to return its memory", 10*time.Second, func() bool { return forcedCollections() >= idle+2 })
	held := liveHeap() - before
	freed := forcedCollections()
	for _, id := range ids {
		q := dial(t, srv, -1)
		q.Send(protocol.TypeRemove, &protocol.Remove{Session: id})
		q.Expect(protocol.TypeDone)
	}
	waitFor(t, "the memory to go back to the system", 10*time.Second, func() bool { return forcedCollections() > freed })
	if left := int64(liveHeap()) - int64(before); left > int64(held)/5 {
		t.Fatalf("5 removed sessions held %d KiB, and still hold %d KiB", held>>10, left>>10)
	}
}

// TestPeekAndListDuringAFlood: output the screen is slow to follow
// (vertical tabs: each one scrolls) neither slows a peek nor holds ls.
// The catch-up counted only LF: a peek of 256 KiB of \v took 21 s, under
// the lock ls needs.
func TestPeekAndListDuringAFlood(t *testing.T) {
	srv := newServer(t, agent.Config{})
	p := dial(t, srv, -1)
	req := keep("flood", "sh", "-c", `echo start; yes | tr -d y | tr '\n' '\v'`)
	req.Size = protocol.WindowSize{Cols: 200, Rows: 50}
	p.Exec(req)
	readUntil(t, p, "start")
	p.Conn.Close()
	for range 3 {
		time.Sleep(200 * time.Millisecond) // a backlog builds up
		done := make(chan time.Duration, 2)
		go func() {
			began := time.Now()
			q := dial(t, srv, -1)
			q.Send(protocol.TypePeek, &protocol.Peek{Session: "flood"})
			q.Expect(protocol.TypeSnapshot)
			done <- time.Since(began)
		}()
		go func() {
			began := time.Now()
			list(t, srv, -1)
			done <- time.Since(began)
		}()
		for range 2 {
			select {
			case d := <-done:
				if d > 3*time.Second {
					t.Fatalf("a peek or ls took %v", d)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("a peek or ls still waiting after 10 s")
			}
		}
	}
	q := dial(t, srv, -1)
	q.Send(protocol.TypeKill, &protocol.Kill{Session: "flood", Signal: "KILL"})
	q.Expect(protocol.TypeDone)
}
