package agent_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/corkvm/cork/guest/agent"
	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/prototest"
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
		q := dialPipe(t, srv)
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

// TestKeptLimitPerUID: a uid that may run sessions only as itself gets at
// most its share of the table; another uid, and root, still get theirs.
func TestKeptLimitPerUID(t *testing.T) {
	srv := newServer(t, agent.Config{MaxKept: 5, MaxKeptPerUID: 2})
	start := func(uid int, name string) *prototest.Peer {
		p := dial(t, srv, uid)
		p.Exec(keep(name, sh("echo ready; sleep 600")...))
		readUntil(t, p, "ready")
		return p
	}
	var all []*prototest.Peer
	for i := range 2 {
		all = append(all, start(1001, fmt.Sprint("mine-", i)))
	}
	p := dial(t, srv, 1001)
	p.Send(protocol.TypeExec, keep("one-too-many", "true"))
	p.ExpectError(protocol.KindBusy, "at most 2 sessions per user")
	all = append(all, start(1002, "theirs"), start(0, "root-0"), start(0, "root-1"))
	q := dial(t, srv, 0)
	q.Send(protocol.TypeExec, keep("root-2", "true"))
	q.ExpectError(protocol.KindBusy, "keeps at most 5 sessions")
	for _, p := range all {
		p.Send(protocol.TypeSignal, &protocol.Signal{Name: "KILL"})
		p.Output(nil)
	}
}

// TestLingerHasAMaximum: a client asks for a longer linger than corkd's,
// or for none at all; it gets corkd's.
func TestLingerHasAMaximum(t *testing.T) {
	srv := newServer(t, agent.Config{Linger: time.Second, DisconnectGrace: 200 * time.Millisecond})
	for _, asked := range []int64{3600, -1} {
		name := fmt.Sprint("asks-", asked)
		p := dial(t, srv, -1)
		req := keep(name, sh("echo ready; sleep 600")...)
		req.LingerSeconds = asked
		p.Exec(req)
		readUntil(t, p, "ready")
		p.Conn.Close()
		waitFor(t, "corkd's linger to hang "+name+" up", 10*time.Second, func() bool {
			for _, s := range list(t, srv, -1) {
				if s.Name == name {
					return s.State == protocol.StateExited && s.Exit.Signal == "HUP"
				}
			}
			return false
		})
	}
}

// TestNamesBelongToTheirOwner: two uids each have a session named the
// same, neither told the other's exists; a uid reaches only its own by
// name; root names another uid's OWNER/NAME, and ls says whose each is.
func TestNamesBelongToTheirOwner(t *testing.T) {
	srv := newServer(t, agent.Config{})
	const a, b = 61001, 61002 // no passwd entries: the owner is the uid
	for _, uid := range []int{a, b} {
		p := dial(t, srv, uid)
		p.Exec(keep("agent", sh(fmt.Sprintf("echo ready-%d; sleep 600", uid))...))
		readUntil(t, p, "ready")
		p.Conn.Close()
	}
	for _, uid := range []int{a, b} {
		l := list(t, srv, uid)
		if len(l) != 1 || l[0].Name != "agent" || l[0].Owner != fmt.Sprint(uid) {
			t.Fatalf("uid %d lists %+v", uid, l)
		}
		// Its own by name, the other's not even qualified.
		p := dial(t, srv, uid)
		if at := attach(t, p, protocol.Attach{Session: "agent"}); at.Session != l[0].ID || at.Name != "agent" {
			t.Fatalf("uid %d attached to %+v, want its own %s", uid, at, l[0].ID)
		}
		p.Conn.Close()
		other := fmt.Sprintf("%d/agent", a+b-uid)
		q := dial(t, srv, uid)
		q.Send(protocol.TypeAttach, &protocol.Attach{Session: other})
		q.ExpectError(protocol.KindSession, fmt.Sprintf("no such session %q", other))
	}
	if l := list(t, srv, 0); len(l) != 2 || l[0].Owner == l[1].Owner {
		t.Fatalf("root lists %+v, want both with their owners", l)
	}
	// Root has no session named agent of its own.
	p := dial(t, srv, 0)
	p.Send(protocol.TypeAttach, &protocol.Attach{Session: "agent"})
	p.ExpectError(protocol.KindSession, `no such session "agent"`)
	for _, uid := range []int{a, b} {
		ref := fmt.Sprintf("%d/agent", uid)
		snap := peekWithin(t, srv, ref, 5*time.Second)
		if !strings.Contains(strings.Join(snap.Lines, "\n"), fmt.Sprint("ready-", uid)) {
			t.Fatalf("peek %s shows %q", ref, snap.Lines)
		}
		r := dial(t, srv, 0)
		if at := attach(t, r, protocol.Attach{Session: ref}); at.Name != ref {
			t.Fatalf("root attached to %s as %+v; cork would say to attach to that name again", ref, at)
		}
		k := dial(t, srv, 0)
		k.Send(protocol.TypeKill, &protocol.Kill{Session: ref, Signal: "KILL"})
		k.Expect(protocol.TypeDone)
		r.Output(nil)
	}
}

// lastFrame reads p's frames, output included, in a goroutine of its own
// until one of the frames that end a client's part, and sends its type.
func lastFrame(p *prototest.Peer) <-chan protocol.Type {
	got := make(chan protocol.Type, 1)
	go func() {
		for {
			typ, _, err := p.R.Next()
			switch {
			case err != nil:
				got <- protocol.TypeError
				return
			case typ == protocol.TypeDetached, typ == protocol.TypeExit, typ == protocol.TypeError:
				got <- typ
				return
			}
		}
	}()
	return got
}

// TestTakeoverIsFinal: a client taken over that reconnects and resumes,
// as cork does after its connection drops, is told it was taken over; it
// never takes the session back. The client that took it over resumes.
func TestTakeoverIsFinal(t *testing.T) {
	srv := newServer(t, agent.Config{})
	p := dial(t, srv, -1)
	st := p.Exec(keep("final", counter...))
	out := readUntil(t, p, "\n3\r")
	q := dial(t, srv, -1)
	at := attach(t, q, protocol.Attach{Session: "final"})
	if at.Holder == st.Holder {
		t.Fatalf("the new client's hold %d is the first's", at.Holder)
	}
	if typ := p.Expect(protocol.TypeDetached); typ == nil {
		t.Fatal("no Detached")
	}
	q.Drain()
	seen := uint64(len(out))
	r := dial(t, srv, -1)
	r.Send(protocol.TypeAttach, &protocol.Attach{Session: st.Session, Resume: &seen, Holder: st.Holder})
	typ, payload, err := r.R.Next()
	if err != nil || typ != protocol.TypeDetached {
		t.Fatalf("the client taken over resumed and got %s %s (%v), want Detached", typ, payload, err)
	}
	if l := list(t, srv, -1); !l[0].Attached {
		t.Fatalf("the client that took over lost the session: %+v", l)
	}
	// The holder of the session resumes as ever, and gets a new hold
	// each time; a resume cut short before the client heard back may be
	// made again with the hold it gave.
	q.Conn.Close()
	zero := uint64(0)
	cut := dial(t, srv, -1)
	at1 := attach(t, cut, protocol.Attach{Session: st.Session, Resume: &zero, Holder: at.Holder})
	if at1.Holder == at.Holder || at1.Holder == 0 {
		t.Fatalf("resume by the holder: hold %d after %d, want a new one", at1.Holder, at.Holder)
	}
	cut.Conn.Close()
	s := dial(t, srv, -1)
	if at2 := attach(t, s, protocol.Attach{Session: st.Session, Resume: &zero, Holder: at.Holder}); at2.Holder == at1.Holder || at2.Holder == 0 {
		t.Fatalf("resume by the holder, again with its hold %d: %+v", at.Holder, at2)
	}
	readUntil(t, s, "\n")
	s.Send(protocol.TypeSignal, &protocol.Signal{Name: "KILL"})
	s.Output(nil)
}

// TestLateResumeTakesNothing: a client whose connection dropped resumes,
// and that connection drops too before the agent reads the resume; the
// client tries again on a third. The agent reads the third first, then
// the second's, late: the late one, an earlier attempt, is told it was
// taken over, and the client's live connection keeps the session. (Taken
// as a repeat, it took the session from its own client, who was then
// refused as taken over: TestResumeOverCuts under load.)
func TestLateResumeTakesNothing(t *testing.T) {
	srv := newServer(t, agent.Config{})
	p := dial(t, srv, -1)
	st := p.Exec(keep("late", counter...))
	readUntil(t, p, "\n3\r")
	p.Conn.Close()
	zero := uint64(0)
	late, live := dial(t, srv, -1), dial(t, srv, -1)
	attach(t, live, protocol.Attach{Session: st.Session, Resume: &zero, Holder: st.Holder, Attempt: 2})
	late.Send(protocol.TypeAttach, &protocol.Attach{Session: st.Session, Resume: &zero, Holder: st.Holder, Attempt: 1})
	if typ, payload, err := late.R.Next(); err != nil || typ != protocol.TypeDetached {
		t.Fatalf("the late resume got %s %s (%v), want Detached", typ, payload, err)
	}
	readUntil(t, live, "\n")
	live.Send(protocol.TypeSignal, &protocol.Signal{Name: "KILL"})
	live.Output(nil)
}

// TestSimultaneousAttachesOneWins: two clients attach at the same instant;
// exactly one drives the session and the other is told it was taken over.
func TestSimultaneousAttachesOneWins(t *testing.T) {
	srv := newServer(t, agent.Config{})
	p := dial(t, srv, -1)
	p.Exec(keep("contested", counter...))
	readUntil(t, p, "\n1\r")
	p.Conn.Close()
	for round := range 20 {
		a, b := dial(t, srv, -1), dial(t, srv, -1)
		for _, c := range []*prototest.Peer{a, b} {
			go c.W.WriteFrame(protocol.TypeAttach, prototest.Payload(&protocol.Attach{Session: "contested"}))
		}
		ea, eb := lastFrame(a), lastFrame(b)
		var other <-chan protocol.Type
		select {
		case typ := <-ea:
			if typ != protocol.TypeDetached {
				t.Fatalf("round %d: a client ended with %s", round, typ)
			}
			other = eb
		case typ := <-eb:
			if typ != protocol.TypeDetached {
				t.Fatalf("round %d: a client ended with %s", round, typ)
			}
			other = ea
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: neither of two simultaneous attaches was told it was taken over", round)
		}
		select {
		case typ := <-other:
			t.Fatalf("round %d: both simultaneous attaches ended (%s too)", round, typ)
		case <-time.After(200 * time.Millisecond):
		}
		a.Conn.Close()
		b.Conn.Close()
	}
	k := dial(t, srv, -1)
	k.Send(protocol.TypeKill, &protocol.Kill{Session: "contested", Signal: "KILL"})
	k.Expect(protocol.TypeDone)
}

// TestLingeredOutIsSaid: a session forgotten because its linger ran out
// is said to have lingered out, by name or id, to whoever may reach it;
// to another uid, and for a name never used, there is no such session.
func TestLingeredOutIsSaid(t *testing.T) {
	srv := newServer(t, agent.Config{})
	const uid = 61003
	p := dial(t, srv, uid)
	req := keep("brief", sh("echo ready; sleep 0.5; exit 3")...)
	req.LingerSeconds = 1
	st := p.Exec(req)
	readUntil(t, p, "ready")
	p.Conn.Close()
	waitFor(t, "the linger to run out", 10*time.Second, func() bool { return len(list(t, srv, uid)) == 0 })
	for _, tc := range []struct {
		uid       int
		ref, want string
	}{
		{uid, "brief", `session "brief" lingered out`},
		{uid, st.Session, "lingered out"},
		{0, fmt.Sprintf("%d/brief", uid), "lingered out"},
		{61004, fmt.Sprintf("%d/brief", uid), "no such session"},
		{61004, st.Session, "no such session"},
		{uid, "never", `no such session "never"`},
	} {
		q := dial(t, srv, tc.uid)
		q.Send(protocol.TypeAttach, &protocol.Attach{Session: tc.ref})
		q.ExpectError(protocol.KindSession, tc.want)
	}
}

// createOrAttach sends a create-or-attach Exec and returns the type of
// its answer (Started, Attached or Error) without failing the test, for
// use from goroutines.
func createOrAttach(p *prototest.Peer, name string) protocol.Type {
	req := keep(name, counter...)
	req.AttachExisting = true
	if err := p.W.WriteFrame(protocol.TypeExec, prototest.Payload(&req)); err != nil {
		return protocol.TypeError
	}
	for {
		typ, _, err := p.R.Next()
		switch {
		case err != nil:
			return protocol.TypeError
		case typ == protocol.TypeStarted, typ == protocol.TypeAttached, typ == protocol.TypeError:
			return typ
		}
	}
}

// TestCreateOrAttach: an Exec with AttachExisting starts the session the
// first time and attaches to it the next (taking it over); another uid's
// of the same name is its own; of two at the same instant for a new name,
// one starts the program and the other attaches to it.
func TestCreateOrAttach(t *testing.T) {
	srv := newServer(t, agent.Config{})
	p := dial(t, srv, -1)
	if typ := createOrAttach(p, "agent"); typ != protocol.TypeStarted {
		t.Fatalf("the first create-or-attach got %s, want Started", typ)
	}
	q := dial(t, srv, -1)
	if typ := createOrAttach(q, "agent"); typ != protocol.TypeAttached {
		t.Fatalf("the second create-or-attach got %s, want Attached", typ)
	}
	p.Expect(protocol.TypeDetached)
	q.Drain()
	other := dial(t, srv, 61005)
	if typ := createOrAttach(other, "agent"); typ != protocol.TypeStarted {
		t.Fatalf("another uid's create-or-attach got %s, want a session of its own", typ)
	}
	other.Drain()
	for round := range 10 {
		name := fmt.Sprint("race-", round)
		a, b := dial(t, srv, -1), dial(t, srv, -1)
		got := make(chan protocol.Type, 2)
		for _, c := range []*prototest.Peer{a, b} {
			go func() { got <- createOrAttach(c, name) }()
		}
		answers := []protocol.Type{<-got, <-got}
		slices.Sort(answers)
		if want := []protocol.Type{protocol.TypeStarted, protocol.TypeAttached}; !slices.Equal(answers, slices.Sorted(slices.Values(want))) {
			t.Fatalf("round %d: two create-or-attach at once got %v, want one Started and one Attached", round, answers)
		}
		a.Drain()
		b.Drain()
	}
	n := 0
	for _, s := range list(t, srv, 0) {
		if strings.HasPrefix(s.Name, "race-") {
			n++
		}
		k := dial(t, srv, 0)
		k.Send(protocol.TypeKill, &protocol.Kill{Session: s.ID, Signal: "KILL"})
		k.Expect(protocol.TypeDone)
	}
	if n != 10 {
		t.Fatalf("%d sessions for 10 names", n)
	}
}

// TestKeptExecThatNeverReads: a peer that asks for a kept session and
// reads nothing, not even Started, holds nothing: the session is filed,
// detached once the write has waited the stall time, and reachable.
func TestKeptExecThatNeverReads(t *testing.T) {
	agent.SetClientStall(t, 500*time.Millisecond)
	srv := newServer(t, agent.Config{})
	p := dial(t, srv, -1)
	p.Send(protocol.TypeExec, keep("mute", counter...))
	waitFor(t, "the session to be filed, detached", 10*time.Second, func() bool {
		l := listWithin(t, srv, 2*time.Second)
		return len(l) == 1 && !l[0].Attached
	})
	k := dial(t, srv, -1)
	k.Send(protocol.TypeKill, &protocol.Kill{Session: "mute", Signal: "KILL"})
	k.Expect(protocol.TypeDone)
}

// TestClientBehindTheRingIsCutOff: a client that falls further behind
// than the output kept is cut off, without holding the program up; its
// resume from where it was gets the screen instead of the bytes lost.
func TestClientBehindTheRingIsCutOff(t *testing.T) {
	srv := newServer(t, agent.Config{KeepBuffer: 64 << 10})
	p := dial(t, srv, -1)
	done := filepath.Join(t.TempDir(), "flood-done")
	req := keep("flood", sh(`read go; yes | head -c 4000000; touch `+done+`; sleep 600`)...)
	req.Stdin = true
	p.Exec(req)
	p.Send(protocol.TypeStdin, []byte("go\n"))
	// p reads nothing while the flood passes the 64 KiB kept.
	// Well before a write to p gives up (10 s): the program never waits on p.
	waitFor(t, "the flood to end", 6*time.Second, func() bool { _, err := os.Stat(done); return err == nil })
	var seen uint64
	for {
		typ, payload, err := p.R.Next()
		if err != nil {
			break // cut off: no Detached, no Exit
		}
		switch typ {
		case protocol.TypeStdout:
			seen += uint64(len(payload))
		case protocol.TypeDetached, protocol.TypeExit, protocol.TypeError:
			t.Fatalf("the client behind got %s, want to be cut off", typ)
		}
	}
	if seen >= 4000000 {
		t.Fatalf("the client got all %d bytes", seen)
	}
	q := dial(t, srv, -1)
	at := attach(t, q, protocol.Attach{Session: "flood", Resume: &seen})
	if at.Resumed {
		t.Fatalf("resumed from byte %d, which the ring no longer holds: %+v", seen, at)
	}
	q.Expect(protocol.TypeRestore)
	k := dial(t, srv, -1)
	k.Send(protocol.TypeKill, &protocol.Kill{Session: "flood", Signal: "KILL"})
	k.Expect(protocol.TypeDone)
	q.Output(nil)
}

// TestCreateOrAttachOutlivesHandshakeDeadline: a create-or-attach that
// attaches is admitted as an attach is; the handshake's deadline, which
// bounds connections not yet in a session, does not close it later.
func TestCreateOrAttachOutlivesHandshakeDeadline(t *testing.T) {
	const timeout = 500 * time.Millisecond
	srv := newServer(t, agent.Config{HandshakeTimeout: timeout})
	p := dial(t, srv, -1)
	if typ := createOrAttach(p, "late"); typ != protocol.TypeStarted {
		t.Fatalf("the first create-or-attach got %s, want Started", typ)
	}
	q := dial(t, srv, -1)
	if typ := createOrAttach(q, "late"); typ != protocol.TypeAttached {
		t.Fatalf("the second create-or-attach got %s, want Attached", typ)
	}
	p.Drain()
	// Past the deadline, which would have closed it by now.
	time.Sleep(3 * timeout)
	// Sent beside the reads: the pipe holds nothing, and corkd writes the
	// screen before it reads.
	go q.W.WriteFrame(protocol.TypePing, nil)
	for {
		typ, _, err := q.R.Next()
		if err != nil {
			t.Fatalf("the attached connection ended past the handshake deadline: %v", err)
		}
		if typ == protocol.TypePong {
			break
		}
		if typ != protocol.TypeStdout && typ != protocol.TypeRestore {
			t.Fatalf("%s while waiting for Pong", typ)
		}
	}
	q.Send(protocol.TypeSignal, &protocol.Signal{Name: "KILL"})
	q.Drain()
}

// TestWatchersRaceTheExit: watchers attaching while a session exits never
// find it half ended (a watcher registered after finish let its watchers
// go); corkd stays up and answers.
func TestWatchersRaceTheExit(t *testing.T) {
	srv := newServer(t, agent.Config{})
	for round := range 15 {
		p := dial(t, srv, -1)
		req := keep("", "head", "-c1") // ends with the line p sends below
		req.Stdin = true
		st := p.Exec(req)
		p.Drain()
		done := make(chan struct{})
		for range 4 {
			go func() {
				defer func() { done <- struct{}{} }()
				for {
					w := connectAs(t, srv, func(c net.Conn) net.Conn { return c })
					q := prototest.NewPeer(t, w)
					q.Hello()
					q.Send(protocol.TypeAttach, &protocol.Attach{Session: st.Session, ReadOnly: true})
					typ, payload, err := q.R.Next()
					w.Close()
					if err != nil || typ == protocol.TypeError && strings.Contains(string(payload), "no such session") {
						return // the session was forgotten, or corkd is gone
					} // else attached, or busy with the watchers that just left

				}
			}()
		}
		p.Send(protocol.TypeStdin, []byte("x\n"))
		for range 4 {
			<-done
		}
		p.Conn.Close()
		if l := listWithin(t, srv, 5*time.Second); len(l) > 0 && l[0].State == protocol.StateRunning {
			t.Fatalf("round %d: %+v", round, l)
		}
	}
}

// withDeadline gives p's connection a deadline, so that a frame that never
// comes fails the test instead of hanging it.
func withDeadline(p *prototest.Peer, deadline time.Time) *prototest.Peer {
	p.Conn.(net.Conn).SetDeadline(deadline)
	return p
}

// TestAttachRightAfterStarted: a client that has read Started attaches at
// once, on another connection, by the id or the name it was given, and
// finds the session: Started goes out only once the session is filed.
func TestAttachRightAfterStarted(t *testing.T) {
	srv := newServer(t, agent.Config{})
	deadline := time.Now().Add(time.Minute)
	for round := range 200 {
		// q says hello first, so that its attach follows Started as
		// closely as a client's can.
		p, q := withDeadline(dial(t, srv, -1), deadline), withDeadline(dial(t, srv, -1), deadline)
		name := fmt.Sprint("at-once-", round)
		st := p.Exec(keep(name, "sleep", "600"))
		ref := st.Session
		if round%2 == 1 {
			ref = name
		}
		q.Send(protocol.TypeAttach, &protocol.Attach{Session: ref})
		typ, payload, err := q.R.Next()
		if err != nil || typ != protocol.TypeAttached {
			t.Fatalf("round %d: attach by %q right after Started got %s %s (%v), want Attached", round, ref, typ, payload, err)
		}
		q.Send(protocol.TypeSignal, &protocol.Signal{Name: "KILL"})
		q.Output(nil)
		p.Conn.Close()
		q.Conn.Close()
	}
}

// TestAttachRacingTheStart: attaches by name sent while the session starts
// find it no sooner than it is filed, and the one that does takes it over
// from its creator only after Started: the creator reads Started first,
// then Detached, whenever the attach landed.
func TestAttachRacingTheStart(t *testing.T) {
	srv := newServer(t, agent.Config{})
	deadline := time.Now().Add(time.Minute)
	for round := range 200 {
		name := fmt.Sprint("raced-", round)
		p := withDeadline(dial(t, srv, -1), deadline)
		p.Send(protocol.TypeExec, keep(name, "sleep", "600"))
		var q *prototest.Peer
		for q == nil {
			c := withDeadline(dial(t, srv, -1), deadline)
			c.Send(protocol.TypeAttach, &protocol.Attach{Session: name})
			typ, payload, err := c.R.Next()
			switch {
			case err != nil:
				t.Fatalf("round %d: attach: %v", round, err)
			case typ == protocol.TypeAttached:
				q = c
			case typ != protocol.TypeError || !strings.Contains(string(payload), "no such session"):
				t.Fatalf("round %d: attach got %s %s", round, typ, payload)
			default:
				c.Conn.Close()
			}
		}
		for _, want := range []protocol.Type{protocol.TypeStarted, protocol.TypeDetached} {
			if typ, payload, err := p.R.Next(); err != nil || typ != want {
				t.Fatalf("round %d: the creator got %s %s (%v), want %s", round, typ, payload, err, want)
			}
		}
		q.Send(protocol.TypeSignal, &protocol.Signal{Name: "KILL"})
		q.Output(nil)
		p.Conn.Close()
		q.Conn.Close()
	}
}

// TestExitKeptForAClientThatMissedIt: a client attached at the exit that
// stops reading does not get it; the session stays, exited, and the next
// attach gets the status.
func TestExitKeptForAClientThatMissedIt(t *testing.T) {
	agent.SetClientStall(t, 300*time.Millisecond)
	srv := newServer(t, agent.Config{})
	p := dialPipe(t, srv)
	req := keep("missed", sh(`read x; exit 3`)...)
	req.Stdin = true
	p.Exec(req)
	p.W.WriteFrame(protocol.TypeStdin, []byte("go\n")) // and reads nothing more
	waitFor(t, "the session to be listed as exited", 10*time.Second, func() bool {
		l := listWithin(t, srv, 2*time.Second)
		return len(l) == 1 && l[0].State == protocol.StateExited && !l[0].Attached
	})
	q := dial(t, srv, -1)
	at := attach(t, q, protocol.Attach{Session: "missed"})
	if at.Running {
		t.Fatalf("attached %+v", at)
	}
	_, _, exit := q.Output(nil)
	if exit.Code != 3 {
		t.Fatalf("exit %+v, want code 3", exit)
	}
	waitFor(t, "a session whose exit a client got to be forgotten", 5*time.Second, func() bool {
		return len(listWithin(t, srv, 2*time.Second)) == 0
	})
}

// TestAbandonedStdinLeavesNothing: clients that fill their stdin window
// for a program that never reads, then leave, leave neither a goroutine
// nor their queued input behind: a write blocked on the terminal is the
// session's, one at a time.
func TestAbandonedStdinLeavesNothing(t *testing.T) {
	const window = 256 << 10
	srv := newServer(t, agent.Config{StdinWindow: window})
	p := dial(t, srv, -1)
	// Raw mode: a terminal in canonical mode drops what does not fit
	// rather than holding the writer.
	req := keep("deaf", sh(`stty raw -echo; exec sleep 600`)...)
	req.Stdin = true
	st := p.Exec(req)
	t.Cleanup(func() {
		k := dial(t, srv, -1)
		k.Send(protocol.TypeKill, &protocol.Kill{Session: st.Session, Signal: "KILL"})
		k.Expect(protocol.TypeDone)
	})
	chunk := make([]byte, 16<<10)
	fill := func(c *prototest.Peer) {
		for range window / len(chunk) {
			if err := c.W.WriteFrame(protocol.TypeStdin, chunk); err != nil {
				t.Fatal(err)
			}
		}
	}
	p.Drain()
	fill(p)
	p.Conn.Close()
	waitFor(t, "the session to be detached", 10*time.Second, func() bool {
		l := listWithin(t, srv, 2*time.Second)
		return len(l) == 1 && !l[0].Attached
	})
	before, heapBefore := runtime.NumGoroutine(), heapInUse()
	const rounds = 30
	for round := range rounds {
		q := dial(t, srv, -1)
		attach(t, q, protocol.Attach{Session: "deaf"})
		q.Drain()
		fill(q)
		q.Conn.Close()
		waitFor(t, fmt.Sprint("round ", round, ": the session to be detached"), 10*time.Second, func() bool {
			l := listWithin(t, srv, 2*time.Second)
			return len(l) == 1 && !l[0].Attached
		})
	}
	waitFor(t, "the clients' goroutines to end", 10*time.Second, func() bool {
		return runtime.NumGoroutine() < before+rounds/3
	})
	if grew := int64(heapInUse()) - int64(heapBefore); grew > rounds*window/4 {
		t.Fatalf("the heap grew by %d bytes after %d clients left %d bytes of stdin each", grew, rounds, window)
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC() // the pool's buffers go on the second
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestTakenOverClientDrivesNothing: from the moment another client takes
// the session over, the old one's frames (here, resizes) are not applied,
// even while it has not yet read that it was detached.
func TestTakenOverClientDrivesNothing(t *testing.T) {
	srv := newServer(t, agent.Config{})
	p := dialPipe(t, srv)
	st := p.Exec(keep("taken", "sleep", "600")) // p reads nothing more
	t.Cleanup(func() {
		k := dial(t, srv, -1)
		k.Send(protocol.TypeKill, &protocol.Kill{Session: st.Session, Signal: "KILL"})
		k.Expect(protocol.TypeDone)
	})
	waitFor(t, "the session to be filed", 10*time.Second, func() bool { return len(listWithin(t, srv, 2*time.Second)) == 1 })
	q := dial(t, srv, -1)
	attach(t, q, protocol.Attach{Session: "taken", Size: protocol.WindowSize{Cols: 80, Rows: 24}})
	q.Drain()
	waitFor(t, "the redraw for the new client to end", 10*time.Second, func() bool {
		l := listWithin(t, srv, 2*time.Second)
		return len(l) == 1 && l[0].Size == protocol.WindowSize{Cols: 80, Rows: 24}
	})
	for _, s := range []protocol.WindowSize{{Cols: 33, Rows: 11}, {Cols: 34, Rows: 12}} {
		// The second write returns once corkd has read past the first.
		if err := p.W.WriteFrame(protocol.TypeResize, protocol.EncodeResize(s)); err != nil {
			t.Fatal(err)
		}
	}
	if l := listWithin(t, srv, 2*time.Second); len(l) != 1 || l[0].Size.Cols != 80 {
		t.Fatalf("the client taken over resized the session: %+v", l)
	}
}

// TestHoldIsNotGuessable: holds are random, so that a client that did not
// hold the session cannot resume it by counting: after a takeover, the
// holds 1 to 3, which counting gave, resume nothing.
func TestHoldIsNotGuessable(t *testing.T) {
	srv := newServer(t, agent.Config{})
	p := dial(t, srv, -1)
	st := p.Exec(keep("guess", "sleep", "600"))
	t.Cleanup(func() {
		k := dial(t, srv, -1)
		k.Send(protocol.TypeKill, &protocol.Kill{Session: st.Session, Signal: "KILL"})
		k.Expect(protocol.TypeDone)
	})
	p.Drain()
	waitFor(t, "the session to be filed", 10*time.Second, func() bool { return len(listWithin(t, srv, 2*time.Second)) == 1 })
	q := dial(t, srv, -1)
	at := attach(t, q, protocol.Attach{Session: "guess"})
	q.Drain()
	zero := uint64(0)
	for guess := uint64(1); guess <= 3; guess++ {
		if guess == at.Holder || guess == st.Holder {
			t.Fatalf("hold %d, %d: counted", st.Holder, at.Holder)
		}
		r := dial(t, srv, -1)
		r.Send(protocol.TypeAttach, &protocol.Attach{Session: st.Session, Resume: &zero, Holder: guess})
		if typ, payload, err := r.R.Next(); err != nil || typ != protocol.TypeDetached {
			t.Fatalf("a resume with the guessed hold %d got %s %s (%v), want Detached", guess, typ, payload, err)
		}
	}
}
