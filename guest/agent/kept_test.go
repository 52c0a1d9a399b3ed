package agent_test

import (
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corkvm/cork/guest/agent"
	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/prototest"
)

// Kept sessions, in memory: each test drives corkd's side with a hand-made
// host (prototest.Peer) over a socket pair (connectAs).

// peerConn is a connection whose listener said who the peer is, as a unix
// socket's does.
type peerConn struct {
	net.Conn
	uid   uint32
	asAny bool
}

func (c peerConn) Peer() (uint32, bool) { return c.uid, c.asAny }

// SyscallConn is the socket's, as listen.PeerConn's is, so that the agent
// reads it as it reads a real peer's.
func (c peerConn) SyscallConn() (syscall.RawConn, error) {
	return c.Conn.(syscall.Conn).SyscallConn()
}

// dial connects a peer to srv and says hello; uid < 0 is the host (vsock,
// serial), which may do anything.
func dial(t *testing.T, srv *agent.Server, uid int) *prototest.Peer {
	t.Helper()
	host := connectAs(t, srv, func(guest net.Conn) net.Conn {
		if uid < 0 {
			return guest
		}
		return peerConn{Conn: guest, uid: uint32(uid), asAny: uid == 0}
	})
	p := prototest.NewPeer(t, host)
	p.Hello()
	return p
}

// dialPipe is dial for the host over net.Pipe (connectPipe), for a client
// that reads nothing.
func dialPipe(t *testing.T, srv *agent.Server) *prototest.Peer {
	t.Helper()
	p := prototest.NewPeer(t, connectPipe(t, srv))
	p.Hello()
	return p
}

// counter prints 0, 1, 2, ... one a line, forever, slowly enough for a
// PTY.
var counter = sh(`i=0; while :; do echo $i; i=$((i+1)); sleep 0.002; done`)

func keep(name string, argv ...string) protocol.Exec {
	return protocol.Exec{Argv: argv, TTY: true, Keep: true, Name: name, Size: protocol.WindowSize{Cols: 80, Rows: 24}}
}

// readUntil reads output frames until out holds want, returning all of it.
func readUntil(t *testing.T, p *prototest.Peer, want string) string {
	t.Helper()
	var out strings.Builder
	for !strings.Contains(out.String(), want) {
		typ, payload, err := p.R.Next()
		if err != nil {
			t.Fatalf("waiting for %q after %q: %v", want, out.String(), err)
		}
		switch typ {
		case protocol.TypeStdout:
			out.Write(payload)
		case protocol.TypeError, protocol.TypeExit, protocol.TypeDetached:
			t.Fatalf("%s %s while waiting for %q", typ, payload, want)
		}
	}
	return out.String()
}

func attach(t *testing.T, p *prototest.Peer, a protocol.Attach) protocol.Attached {
	t.Helper()
	p.Send(protocol.TypeAttach, &a)
	var at protocol.Attached
	p.Decode(protocol.TypeAttached, p.Expect(protocol.TypeAttached), &at)
	return at
}

func list(t *testing.T, srv *agent.Server, uid int) []protocol.SessionInfo {
	t.Helper()
	p := dial(t, srv, uid)
	p.Send(protocol.TypeList, nil)
	var ss protocol.Sessions
	p.Decode(protocol.TypeSessions, p.Expect(protocol.TypeSessions), &ss)
	return ss.Sessions
}

// TestKeptSessionSurvivesItsConnection: the connection goes, the program
// runs on, and an attach by name gets the live session back.
func TestKeptSessionSurvivesItsConnection(t *testing.T) {
	srv := newServer(t, agent.Config{})
	p := dial(t, srv, -1)
	st := p.Exec(keep("survivor", counter...))
	if !st.Kept || st.Name != "survivor" {
		t.Fatalf("started %+v", st)
	}
	readUntil(t, p, "\n5\r")
	p.Conn.Close()
	waitFor(t, "the session to be detached", 5*time.Second, func() bool {
		l := list(t, srv, -1)
		return len(l) == 1 && !l[0].Attached && l[0].DetachedSince != nil
	})
	if sessionAlive(st.PID) == 0 {
		t.Fatal("the program ended with its connection")
	}
	q := dial(t, srv, -1)
	at := attach(t, q, protocol.Attach{Session: "survivor"})
	if at.Session != st.Session || !at.Running || at.Resumed {
		t.Fatalf("attached %+v", at)
	}
	readUntil(t, q, "\n")
	q.Send(protocol.TypeSignal, &protocol.Signal{Name: "KILL"})
	_, _, exit := q.Output(nil)
	if exit.Code != 137 {
		t.Fatalf("exit %+v", exit)
	}
	waitFor(t, "a session whose exit a client saw to be forgotten", 5*time.Second, func() bool { return len(list(t, srv, -1)) == 0 })
}

// TestResumeLosesNothing: twenty cuts while output flows; each attach
// resumes from the last byte seen, and the numbers come back in order with
// none missing or doubled.
func TestResumeLosesNothing(t *testing.T) {
	srv := newServer(t, agent.Config{})
	p := dial(t, srv, -1)
	st := p.Exec(keep("", counter...))
	var stream []byte
	for cut := 0; cut < 20; cut++ {
		deadline := time.Now().Add(10 * time.Second)
		for got := 0; got < 200 && time.Now().Before(deadline); {
			typ, payload, err := p.R.Next()
			if err != nil {
				t.Fatal(err)
			}
			if typ == protocol.TypeStdout {
				stream = append(stream, payload...)
				got += len(payload)
			}
		}
		p.Conn.Close()
		p = dial(t, srv, -1)
		seen := uint64(len(stream))
		at := attach(t, p, protocol.Attach{Session: st.Session, Resume: &seen})
		if !at.Resumed || at.From != seen {
			t.Fatalf("cut %d: attached %+v, want a resume from %d", cut, at, seen)
		}
	}
	lines := strings.Split(strings.ReplaceAll(string(stream), "\r\n", "\n"), "\n")
	for i, l := range lines[:len(lines)-1] {
		if l != strconv.Itoa(i) {
			t.Fatalf("line %d of the resumed stream is %q", i, l)
		}
	}
	t.Logf("%d bytes, %d numbers in order across 20 cuts", len(stream), len(lines)-1)
}

// TestAttachRedraws: an attach that does not resume makes the program see a
// size change (one column wider, then back), so that it repaints even at
// the same size.
func TestAttachRedraws(t *testing.T) {
	srv := newServer(t, agent.Config{})
	p := dial(t, srv, -1)
	p.Exec(keep("redraw", sh(`trap 'echo "winch $(stty size)"' WINCH; echo ready; while :; do sleep 0.05; done`)...))
	readUntil(t, p, "ready")
	p.Conn.Close()
	q := dial(t, srv, -1)
	attach(t, q, protocol.Attach{Session: "redraw", Size: protocol.WindowSize{Cols: 80, Rows: 24}})
	// Without the redraw the size would not change and no SIGWINCH come.
	readUntil(t, q, "winch 24 80")
	q.Send(protocol.TypeSignal, &protocol.Signal{Name: "KILL"})
	// A new size at attach is the session's at once.
	r := dial(t, srv, -1)
	p2 := dial(t, srv, -1)
	p2.Exec(keep("resized", sh(`trap 'echo "winch $(stty size)"' WINCH; echo ready; while :; do sleep 0.05; done`)...))
	readUntil(t, p2, "ready")
	p2.Conn.Close()
	attach(t, r, protocol.Attach{Session: "resized", Size: protocol.WindowSize{Cols: 120, Rows: 40}})
	readUntil(t, r, "winch 40 120")
	r.Send(protocol.TypeSignal, &protocol.Signal{Name: "KILL"})
}

// TestAttachTakesOver: a second attach takes the session over; the first
// client is told, and its connection ends.
func TestAttachTakesOver(t *testing.T) {
	srv := newServer(t, agent.Config{})
	p := dial(t, srv, -1)
	p.Exec(keep("shared", counter...))
	readUntil(t, p, "\n3\r")
	// The first client goes on reading, as a real one does.
	detached := make(chan protocol.Detached, 1)
	go func() {
		for {
			typ, payload, err := p.R.Next()
			if err != nil {
				close(detached)
				return
			}
			if typ == protocol.TypeDetached {
				var d protocol.Detached
				protocol.Decode(typ, payload, &d)
				detached <- d
			}
		}
	}()
	q := dial(t, srv, -1)
	attach(t, q, protocol.Attach{Session: "shared"})
	select {
	case d, ok := <-detached:
		if !ok || !strings.Contains(d.Reason, "another client") {
			t.Fatalf("the first client got %+v (%v), want told it was taken over", d, ok)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the first client was not told")
	}
	readUntil(t, q, "\n")
	q.Send(protocol.TypeSignal, &protocol.Signal{Name: "KILL"})
}

// TestExitWhileDetached: the status and the last output are kept, and
// the session stays detached since its detach; an attach prints them, ends
// with the program's status, and the session is forgotten.
func TestExitWhileDetached(t *testing.T) {
	srv := newServer(t, agent.Config{})
	p := dial(t, srv, -1)
	p.Exec(keep("brief", sh(`trap 'echo "last words"; exit 7' TERM; echo ready; while :; do sleep 0.05; done`)...))
	readUntil(t, p, "ready")
	p.Conn.Close()
	waitFor(t, "the session to be detached", 5*time.Second, func() bool { l := list(t, srv, -1); return len(l) == 1 && !l[0].Attached })
	detached := *list(t, srv, -1)[0].DetachedSince
	time.Sleep(10 * time.Millisecond) // so that the exit's time differs from the detach's
	k := dial(t, srv, -1)
	k.Send(protocol.TypeKill, &protocol.Kill{Session: "brief", Signal: "TERM"})
	k.Expect(protocol.TypeDone)
	waitFor(t, "the session to exit", 5*time.Second, func() bool {
		l := list(t, srv, -1)
		return len(l) == 1 && l[0].State == protocol.StateExited && l[0].Exit != nil && l[0].Exit.Code == 7
	})
	if since := *list(t, srv, -1)[0].DetachedSince; !since.Equal(detached) {
		t.Fatalf("detached since %v after the exit, want %v, when it was detached", since, detached)
	}
	r := dial(t, srv, -1)
	at := attach(t, r, protocol.Attach{Session: "brief"})
	if at.Running {
		t.Fatalf("attached %+v to an exited session", at)
	}
	out, _, exit := r.Output(nil)
	if exit.Code != 7 || !strings.Contains(out, "ready") || !strings.Contains(out, "last words") {
		t.Fatalf("exited session gave %q, %+v", out, exit)
	}
	// A client saw the exit: the session is forgotten as soon as corkd
	// knows the Exit was written, which it learns after the client may
	// have read it.
	waitFor(t, "the session to be forgotten after an attach saw the exit", 5*time.Second, func() bool {
		return len(list(t, srv, -1)) == 0
	})
	// One nobody attached to stays until removed.
	p = dial(t, srv, -1)
	p.Exec(keep("unseen", sh(`trap 'exit 3' TERM; echo ready; while :; do sleep 0.05; done`)...))
	readUntil(t, p, "ready")
	p.Conn.Close()
	waitFor(t, "the session to be detached", 5*time.Second, func() bool { l := list(t, srv, -1); return len(l) == 1 && !l[0].Attached })
	k = dial(t, srv, -1)
	k.Send(protocol.TypeKill, &protocol.Kill{Session: "unseen", Signal: "TERM"})
	k.Expect(protocol.TypeDone)
	waitFor(t, "the session to exit", 5*time.Second, func() bool { l := list(t, srv, -1); return l[0].State == protocol.StateExited })
	rm := dial(t, srv, -1)
	rm.Send(protocol.TypeRemove, &protocol.Remove{Session: "unseen"})
	rm.Expect(protocol.TypeDone)
	if l := list(t, srv, -1); len(l) != 0 {
		t.Fatalf("after rm: %+v", l)
	}
}

// TestProgramNeverStallsDetached: with nobody attached, a program that
// writes far more than the ring holds runs to its end.
func TestProgramNeverStallsDetached(t *testing.T) {
	srv := newServer(t, agent.Config{KeepBuffer: 64 << 10})
	p := dial(t, srv, -1)
	p.Exec(keep("flood", sh(`yes | head -c 20000000; echo flood-done`)...))
	p.Conn.Close()
	waitFor(t, "the flood to end with nobody attached", 60*time.Second, func() bool {
		l := list(t, srv, -1)
		return len(l) == 1 && l[0].State == protocol.StateExited
	})
	q := dial(t, srv, -1)
	attach(t, q, protocol.Attach{Session: "flood"})
	out, _, exit := q.Output(nil)
	if exit.Code != 0 || !strings.Contains(out, "flood-done") || len(out) > 64<<10 {
		t.Fatalf("kept %d bytes ending %q, exit %+v", len(out), out[max(0, len(out)-40):], exit)
	}
}

// TestListNeverShowsArguments: ls shows the program's name, never its
// arguments or environment, which may hold secrets.
func TestListNeverShowsArguments(t *testing.T) {
	srv := newServer(t, agent.Config{})
	p := dial(t, srv, -1)
	req := keep("secretive", "/bin/sh", "-c", "echo ready; sleep 600", "hunter2-argument")
	req.Env = []string{"TOKEN=hunter2-env"}
	p.Exec(req)
	readUntil(t, p, "ready")
	l := list(t, srv, -1)
	b, _ := json.Marshal(l)
	if len(l) != 1 || l[0].Program != "sh" || l[0].Name != "secretive" || l[0].User == "" || l[0].State != protocol.StateRunning || !l[0].Attached {
		t.Fatalf("listing %s", b)
	}
	if strings.Contains(string(b), "hunter2") {
		t.Fatalf("listing leaks arguments or environment: %s", b)
	}
	p.Send(protocol.TypeSignal, &protocol.Signal{Name: "KILL"})
	p.Output(nil)
}

// TestKeptSessionsBelongToTheirUID: two uids, neither sees nor reaches the
// other's sessions ("no such session", which does not say the name
// exists); root reaches both.
func TestKeptSessionsBelongToTheirUID(t *testing.T) {
	srv := newServer(t, agent.Config{})
	for _, uid := range []int{1001, 1002} {
		p := dial(t, srv, uid)
		// A uid without a passwd entry runs as itself, which corkd (root
		// in these tests) may switch to.
		p.Exec(keep(fmt.Sprintf("of-%d", uid), sh("echo ready; sleep 600")...))
		readUntil(t, p, "ready")
		p.Conn.Close()
	}
	for _, tc := range []struct{ uid, other int }{{1001, 1002}, {1002, 1001}} {
		l := list(t, srv, tc.uid)
		if len(l) != 1 || l[0].Name != fmt.Sprintf("of-%d", tc.uid) {
			t.Fatalf("uid %d lists %+v", tc.uid, l)
		}
		other := fmt.Sprintf("of-%d", tc.other)
		for _, req := range []struct {
			t protocol.Type
			v any
		}{
			{protocol.TypeAttach, &protocol.Attach{Session: other}},
			{protocol.TypeKill, &protocol.Kill{Session: other}},
			{protocol.TypeRemove, &protocol.Remove{Session: other}},
		} {
			p := dial(t, srv, tc.uid)
			p.Send(req.t, req.v)
			p.ExpectError(protocol.KindSession, `no such session "`+other+`"`)
		}
	}
	if l := list(t, srv, 0); len(l) != 2 {
		t.Fatalf("root lists %+v", l)
	}
	for _, uid := range []int{1001, 1002} {
		p := dial(t, srv, 0)
		p.Send(protocol.TypeKill, &protocol.Kill{Session: fmt.Sprintf("%d/of-%d", uid, uid), Signal: "KILL"})
		p.Expect(protocol.TypeDone)
	}
}

// TestLinger: a session detached for its whole linger is hung up; its exit
// is then kept like any other.
func TestLinger(t *testing.T) {
	srv := newServer(t, agent.Config{DisconnectGrace: 200 * time.Millisecond})
	p := dial(t, srv, -1)
	req := keep("short", sh("echo ready; sleep 600")...)
	req.LingerSeconds = 1
	p.Exec(req)
	readUntil(t, p, "ready")
	p.Conn.Close()
	waitFor(t, "the linger to hang the session up", 10*time.Second, func() bool {
		l := list(t, srv, -1)
		return len(l) == 1 && l[0].State == protocol.StateExited && l[0].Exit.Signal == "HUP"
	})
}

// TestKeptBadInput: each bad request is refused with a message that names
// the problem, and the agent goes on.
func TestKeptBadInput(t *testing.T) {
	srv := newServer(t, agent.Config{MaxKept: 2})
	p := dial(t, srv, -1)
	p.Exec(keep("taken", sh("echo ready; sleep 600")...))
	readUntil(t, p, "ready")
	future := uint64(1 << 40)
	for _, tc := range []struct {
		name string
		t    protocol.Type
		v    any
		kind string
		text string
	}{
		{"duplicate name", protocol.TypeExec, keep("taken", "true"), protocol.KindSession, `you already have a session named "taken"`},
		{"name with a slash", protocol.TypeExec, keep("a/b", "true"), protocol.KindRequest, "slash"},
		{"name with a NUL", protocol.TypeExec, keep("a\x00b", "true"), protocol.KindRequest, "NUL"},
		{"name over 64 bytes", protocol.TypeExec, keep(strings.Repeat("n", 65), "true"), protocol.KindRequest, "the limit is 64"},
		{"name like an id", protocol.TypeExec, keep("0123456789abcdef", "true"), protocol.KindRequest, "looks like a session id"},
		{"keep without a terminal", protocol.TypeExec, protocol.Exec{Argv: []string{"true"}, Keep: true}, protocol.KindRequest, "needs a terminal"},
		{"attach to an unknown name", protocol.TypeAttach, &protocol.Attach{Session: "nobody-here"}, protocol.KindSession, `no such session "nobody-here"`},
		{"attach from the future", protocol.TypeAttach, &protocol.Attach{Session: "taken", Resume: &future}, protocol.KindRequest, "the session has written only"},
		{"kill with an unknown signal", protocol.TypeKill, &protocol.Kill{Session: "taken", Signal: "URG"}, protocol.KindRequest, `signal "URG" is not one corkd sends`},
		{"rm of a running session", protocol.TypeRemove, &protocol.Remove{Session: "taken"}, protocol.KindSession, "is running; cork kill it first"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := dial(t, srv, -1)
			q.Send(tc.t, tc.v)
			q.ExpectError(tc.kind, tc.text)
		})
	}
	// The table's limit.
	q := dial(t, srv, -1)
	q.Exec(keep("second", sh("echo ready; sleep 600")...))
	readUntil(t, q, "ready")
	r := dial(t, srv, -1)
	r.Send(protocol.TypeExec, keep("third", "true"))
	r.ExpectError(protocol.KindBusy, "keeps at most 2 sessions")
	// A version-1 host cannot ask for kept sessions.
	v1 := prototest.NewPeer(t, connect(t, srv))
	v1.Send(protocol.TypeHello, &protocol.Hello{MinVersion: 1, MaxVersion: 1})
	v1.Expect(protocol.TypeHello)
	v1.Send(protocol.TypeList, nil)
	v1.ExpectError(protocol.KindProtocol, "list needs protocol version 2")
	for _, peer := range []*prototest.Peer{p, q} {
		peer.Send(protocol.TypeSignal, &protocol.Signal{Name: "KILL"})
		peer.Output(nil)
	}
	stillServes(t, srv)
}

// TestVersion1HostRunsPlainSessions: a host that speaks only version 1 runs
// sessions on the new agent as before.
func TestVersion1HostRunsPlainSessions(t *testing.T) {
	srv := newServer(t, agent.Config{})
	p := prototest.NewPeer(t, connect(t, srv))
	p.Send(protocol.TypeHello, &protocol.Hello{MinVersion: 1, MaxVersion: 1})
	var h protocol.Hello
	p.Decode(protocol.TypeHello, p.Expect(protocol.TypeHello), &h)
	if h.Version != 1 {
		t.Fatalf("negotiated %d with a version-1 host", h.Version)
	}
	p.Exec(protocol.Exec{Argv: []string{"echo", "v1"}})
	if out, _, exit := p.Output(nil); out != "v1\n" || exit.Code != 0 {
		t.Fatalf("%q %+v", out, exit)
	}
}
