package agent_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/corkvm/cork/guest/agent"
	"github.com/corkvm/cork/host/client"
	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/prototest"
)

// Connections before their session: idle ones hold no thread, are bounded
// per peer and in total, and have an absolute deadline.

// serveUnix has srv serve a unix socket, as corkd serve --listen does,
// until the test ends, and returns the socket's path.
func serveUnix(t *testing.T, srv *agent.Server) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "corkd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { l.Close() })
	return sock
}

// TestIdleConnectionsHoldNoThreads: thousands of connections that send
// nothing leave corkd's thread count where it was (each held a thread
// waiting in poll(2), and about 10,000 of them killed corkd with "thread
// exhaustion"), and a real session is still served beside them.
func TestIdleConnectionsHoldNoThreads(t *testing.T) {
	const idle = 2000
	srv := newServer(t, agent.Config{MaxPending: idle + 10, MaxPendingPerPeer: idle + 10, HandshakeTimeout: time.Minute})
	sock := serveUnix(t, srv)
	before := srv.ReadStats().Threads

	conns := make([]net.Conn, 0, idle)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range idle {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatalf("connection %d: %v", len(conns), err)
		}
		conns = append(conns, c)
	}
	// Pending counts a connection before its goroutine reads: wait until
	// each waits for its hello in Go's poller. A read that held a thread
	// would show as a goroutine in a system call, never as one in IO wait.
	waitFor(t, "every connection to wait for its hello", 30*time.Second, func() bool { return handshakesInIOWait() == idle })
	if st := srv.ReadStats(); st.Threads > before+50 {
		t.Fatalf("%d idle connections took corkd from %d threads to %d", idle, before, st.Threads)
	}

	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	s := &client.Session{Exec: protocol.Exec{Argv: []string{"echo", "served"}}, Stdout: &out, Stderr: &out}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if exit, err := s.Run(ctx, c); err != nil || exit.Code != 0 || out.String() != "served\n" {
		t.Fatalf("a session beside %d idle connections: %v, %+v, %q", idle, err, exit, out.String())
	}
}

// handshakesInIOWait counts the goroutines waiting in Go's poller for a
// frame of a connection's handshake.
func handshakesInIOWait() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "[IO wait") && strings.Contains(g, "(*handshake).run") {
			count++
		}
	}
	return count
}

// TestHandshakeDeadlineNotExtendedByPings: a peer that pings and never
// sends its request is cut at the handshake deadline, counted from its
// connect: pings used to restart the deadline, so such a connection
// stayed pending for ever.
func TestHandshakeDeadlineNotExtendedByPings(t *testing.T) {
	srv := newServer(t, agent.Config{HandshakeTimeout: 300 * time.Millisecond})
	p := prototest.NewPeer(t, connect(t, srv))
	p.Hello()
	cut := time.Now().Add(10 * time.Second)
	for {
		if time.Now().After(cut) {
			t.Fatal("a peer that pings every 20ms is still served 10s after its connect; the handshake deadline is 300ms")
		}
		if p.W.WriteFrame(protocol.TypePing, []byte("x")) != nil {
			return
		}
		if typ, _, err := p.R.Next(); err != nil {
			return
		} else if typ != protocol.TypePong {
			t.Fatalf("answered a ping with %s", typ)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPendingLimits: past its limit a peer's next connection is refused
// at once with an error naming it, while other peers go on connecting;
// past the total, everyone's is; a pending connection that ends, or is
// admitted to a session, frees its place.
func TestPendingLimits(t *testing.T) {
	srv := newServer(t, agent.Config{MaxPendingPerPeer: 2, MaxPending: 3})
	idle := func(uid int) *prototest.Peer { return dial(t, srv, uid) } // hello answered; no request
	first := idle(1000)
	idle(1000)
	refused := prototest.NewPeer(t, connectAs(t, srv, asUID(1000)))
	refused.ExpectError(protocol.KindBusy, "2 connections from uid 1000")
	if _, _, err := refused.R.Next(); err == nil {
		t.Fatal("a refused connection was not closed")
	}

	other := idle(0) // another uid still gets in, up to the total
	prototest.NewPeer(t, connectAs(t, srv, asUID(1002))).ExpectError(protocol.KindBusy, "--max-pending)")

	first.Conn.Close()
	waitFor(t, "the closed connection to be counted out", 10*time.Second, func() bool { return srv.ReadStats().Pending == 2 })
	idle(1000)
	other.Exec(protocol.Exec{Argv: []string{"true"}})
	waitFor(t, "the admitted connection to be counted out", 10*time.Second, func() bool { return srv.ReadStats().Pending == 2 })
	idle(1002)
}

func asUID(uid uint32) func(net.Conn) net.Conn {
	return func(c net.Conn) net.Conn { return peerConn{Conn: c, uid: uid} }
}

// TestShutdownHangsUpSessions: Shutdown hangs up every session, a kept
// one and one whose program ignores SIGHUP included, and each client gets
// its Exit: corkd used to return on SIGTERM and leave programs running.
func TestShutdownHangsUpSessions(t *testing.T) {
	srv := newServer(t, agent.Config{DisconnectGrace: 200 * time.Millisecond})
	plain := dial(t, srv, 0)
	stubborn := dial(t, srv, 0)
	kept := dial(t, srv, 0)
	var pids []int
	for _, s := range []struct {
		p   *prototest.Peer
		req protocol.Exec
	}{
		{plain, protocol.Exec{Argv: sh("echo up; sleep 600")}},
		{stubborn, protocol.Exec{Argv: sh("trap '' HUP; echo up; while :; do sleep 1; done")}},
		{kept, keep("kept", "sh", "-c", "echo up; sleep 600")},
	} {
		pids = append(pids, s.p.Exec(s.req).PID)
		readUntil(t, s.p, "up")
	}
	pending := dial(t, srv, 0) // said hello, no request yet

	done := make(chan struct{})
	go func() {
		srv.Shutdown(time.Second)
		close(done)
	}()
	for i, want := range []string{"HUP", "KILL", "HUP"} {
		_, _, exit := []*prototest.Peer{plain, stubborn, kept}[i].Output(nil)
		if exit.Signal != want {
			t.Errorf("session %d: exit %+v, want killed by SIG%s", i, exit, want)
		}
	}
	if _, _, err := pending.R.Next(); err == nil {
		t.Error("a connection without a session was not closed")
	}
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	for _, pid := range pids {
		if syscall.Kill(pid, 0) == nil {
			t.Errorf("program %d still runs after Shutdown", pid)
		}
	}
	late := prototest.NewPeer(t, connect(t, srv))
	late.ExpectError(protocol.KindBusy, "shutting down")
}

// TestShutdownFindsSessionsStartingMeanwhile: a session admitted just
// before Shutdown, and tracked only after Shutdown listed the sessions
// running, is hung up too and Shutdown waits for its end. It escaped:
// Shutdown returned at once, and a program that ignores SIGHUP outlived
// corkd.
func TestShutdownFindsSessionsStartingMeanwhile(t *testing.T) {
	for _, req := range []protocol.Exec{
		{Argv: sh("trap '' HUP; echo up; exec sleep 600")},
		keep("late", "sh", "-c", "trap '' HUP; echo up; exec sleep 600"),
	} {
		t.Run(fmt.Sprintf("keep=%v", req.Keep), func(t *testing.T) {
			srv := newServer(t, agent.Config{DisconnectGrace: time.Second})
			pids, release := make(chan int, 1), make(chan struct{})
			agent.SetTrackingHook(func(pid int) {
				pids <- pid
				<-release
			})
			t.Cleanup(func() { agent.SetTrackingHook(nil) })
			pending := dial(t, srv, 0) // closed by Shutdown: the sign it began
			p := dial(t, srv, 0)
			p.Exec(req)
			var pid int
			select {
			case pid = <-pids:
			case <-time.After(20 * time.Second):
				t.Fatal("the session did not start")
			}
			t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
			readUntil(t, p, "up") // SIGHUP is ignored from here on

			done := make(chan struct{})
			go func() {
				srv.Shutdown(time.Second)
				close(done)
			}()
			if _, _, err := pending.R.Next(); err == nil {
				t.Fatal("Shutdown did not close a connection without a session")
			}
			close(release)
			// The client reads on meanwhile: its Exit waits for a reader.
			exited := make(chan protocol.Exit, 1)
			go func() {
				_, _, exit := p.Output(nil)
				exited <- exit
			}()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("Shutdown did not return")
			}
			if syscall.Kill(pid, 0) == nil {
				t.Fatalf("program %d, started as Shutdown began, still runs after it returned", pid)
			}
			select {
			case exit := <-exited:
				if exit.Signal != "KILL" {
					t.Fatalf("exit %+v, want killed by SIGKILL", exit)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("the client got no Exit")
			}
		})
	}
}

// lockedBuffer is a log's destination that tests read while it is written.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// lines returns the lines logged so far that contain all of words.
func (b *lockedBuffer) lines(words ...string) []string {
	var found []string
	for _, l := range strings.Split(b.String(), "\n") {
		if l != "" && containsAll(l, words) {
			found = append(found, l)
		}
	}
	return found
}

func containsAll(s string, words []string) bool {
	for _, w := range words {
		if !strings.Contains(s, w) {
			return false
		}
	}
	return true
}

// TestPeerWarningsRateLimited: a peer that sends garbage in a loop, or
// lets its handshakes time out in a loop, gets a log line a second that
// names it and counts what it stands for. Each such refusal and timeout
// was a line of its own, without the peer: a confined uid wrote 13,329
// lines in a second.
func TestPeerWarningsRateLimited(t *testing.T) {
	const n = 50
	var log lockedBuffer
	srv := newServer(t, agent.Config{HandshakeTimeout: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&log, nil))})
	for range n {
		conn := connectAs(t, srv, asUID(1000))
		go conn.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
		prototest.NewPeer(t, conn).ExpectError(protocol.KindProtocol, "unknown frame type")
	}
	var idle []*prototest.Peer
	for range n {
		idle = append(idle, prototest.NewPeer(t, connectAs(t, srv, asUID(1001))))
	}
	for _, p := range idle {
		if _, _, err := p.R.Next(); err == nil {
			t.Fatal("a connection that sent nothing got a frame")
		}
	}
	for _, w := range []struct{ peer, msg string }{{"uid 1000", "refused"}, {"uid 1001", "handshake timed out"}} {
		lines := log.lines(w.msg, `peer="`+w.peer+`"`)
		if len(lines) == 0 || len(lines) > 5 {
			t.Errorf("%d %q from %s: %d lines naming the peer, want 1 a second:\n%s", n, w.msg, w.peer, len(lines), log.String())
		}
	}
}

// TestPendingBytesBounded: a frame announced before admission is charged
// to its peer's budget before corkd allocates it, so connections that
// announce frames of 1 MiB and stop hold no more than the budget; a hello
// larger than a hello is refused at once; a real request of half a MiB
// from another peer still runs. Each such connection held its whole
// frame: 64 from one uid took corkd's RSS from 7.8 to 75.8 MiB.
func TestPendingBytesBounded(t *testing.T) {
	const conns, budget = 64, 4 << 20
	srv := newServer(t, agent.Config{MaxPendingBytesPerPeer: budget, HandshakeTimeout: time.Minute})
	big := prototest.NewPeer(t, connectAs(t, srv, asUID(1000)))
	go big.Conn.Write(prototest.Header(protocol.TypeHello, 64<<10))
	big.ExpectError(protocol.KindProtocol, "hello of 65536 bytes, the limit is 4096")

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	refused := make(chan string, conns)
	hello := prototest.Frame(protocol.TypeHello, &protocol.Hello{MinVersion: protocol.MinVersion, MaxVersion: protocol.MaxVersion})
	for range conns {
		p := prototest.NewPeer(t, connectAs(t, srv, asUID(1000)))
		go func() {
			// The hello is charged too: past the budget, it is refused.
			p.Conn.Write(append(hello, prototest.Header(protocol.TypeExec, protocol.MaxPayload)...))
			for {
				typ, payload, err := p.R.Next()
				if err != nil {
					return
				}
				if typ == protocol.TypeError {
					refused <- string(payload)
					return
				}
			}
		}()
	}
	for i := range conns - budget/protocol.MaxPayload {
		select {
		case msg := <-refused:
			if !strings.Contains(msg, "uid 1000") || !strings.Contains(msg, "busy") {
				t.Fatalf("refusal %d: %s", i, msg)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%d of %d connections that announced 1 MiB frames were refused; the budget holds %d",
				i, conns, budget/protocol.MaxPayload)
		}
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d connections announcing 1 MiB frames: heap %+d KiB", conns, grew>>10)
	if grew > 2*budget {
		t.Fatalf("%d connections announcing 1 MiB frames took the heap up %d MiB; the budget is %d MiB",
			conns, grew>>20, budget>>20)
	}

	var env []string // half a MiB; one string may be 128 KiB (MAX_ARG_STRLEN)
	for i := range 8 {
		env = append(env, fmt.Sprintf("BIG%d=%s", i, strings.Repeat("x", 64<<10)))
	}
	p := dial(t, srv, 0)
	p.Exec(protocol.Exec{Argv: sh("echo ${#BIG7}"), Env: env})
	if out, _, exit := p.Output(nil); exit.Code != 0 || out != "65536\n" {
		t.Fatalf("a request of half a MiB beside them: %q, %+v", out, exit)
	}
}

// TestThreadsPerSession: a running session holds at most two threads, its
// frames' reader and the wait for its program, which is what makes
// MaxSessions a bound on the agent's threads.
func TestThreadsPerSession(t *testing.T) {
	const sessions = 32
	srv := newServer(t, agent.Config{DisconnectGrace: 100 * time.Millisecond})
	sock := serveUnix(t, srv)
	before := srv.ReadStats().Threads
	for i := range sessions {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		p := prototest.NewPeer(t, c)
		p.Hello()
		p.Exec(protocol.Exec{Argv: sh("echo up; exec sleep 600"), TTY: i%2 == 0})
		readUntil(t, p, "up")
	}
	st := srv.ReadStats()
	if st.Sessions != sessions || st.Threads > before+2*sessions+runtime.GOMAXPROCS(0)+8 {
		t.Fatalf("%d sessions took corkd from %d threads to %d; the bound is 2 a session, GOMAXPROCS (%d) and a few",
			st.Sessions, before, st.Threads, runtime.GOMAXPROCS(0))
	}
	t.Logf("%d sessions: threads %d -> %d", sessions, before, st.Threads)
}
