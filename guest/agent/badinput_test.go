package agent_test

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corkvm/cork/guest/agent"
	"github.com/corkvm/cork/host/client"
	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/prototest"
)

// Bad input: each case gets an error frame that names the problem, and
// the agent goes on serving. One small exchange per case.

// stillServes proves the agent works after whatever a test did to it.
func stillServes(t *testing.T, srv *agent.Server) {
	t.Helper()
	r := run(t, srv, protocol.Exec{Argv: []string{"echo", "alive"}}, nil)
	if r.err != nil || r.stdout != "alive\n" {
		t.Fatalf("agent no longer serves: %q, %v", r.stdout, r.err)
	}
}

func TestHandshakeRejects(t *testing.T) {
	srv := newServer(t, agent.Config{})
	tests := []struct {
		name string
		send func(conn net.Conn)
		kind string
		text string
	}{
		{"garbage instead of hello", func(c net.Conn) { c.Write([]byte("GET / HTTP/1.1\r\n\r\n")) }, protocol.KindProtocol, "unknown frame type 0x47"},
		{"exec before hello", func(c net.Conn) {
			protocol.NewWriter(c).WriteJSON(protocol.TypeExec, &protocol.Exec{Argv: []string{"true"}})
		}, protocol.KindProtocol, "expected a hello frame first, got exec"},
		{"wrong version", func(c net.Conn) {
			protocol.NewWriter(c).WriteJSON(protocol.TypeHello, &protocol.Hello{MinVersion: 5, MaxVersion: 7})
		}, protocol.KindVersion, "peer speaks versions 5 to 7, this side speaks versions 1 to 2"},
		{"oversize frame", func(c net.Conn) { c.Write(prototest.Header(protocol.TypeHello, 1<<30)) }, protocol.KindProtocol, "the limit is 1048576"},
		{"hello not JSON", func(c net.Conn) { protocol.NewWriter(c).WriteFrame(protocol.TypeHello, []byte("{{")) }, protocol.KindProtocol, "bad hello payload"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := connect(t, srv)
			go tt.send(conn)
			prototest.NewPeer(t, conn).ExpectError(tt.kind, tt.text)
			stillServes(t, srv)
		})
	}
}

func TestExecRejects(t *testing.T) {
	srv := newServer(t, agent.Config{})
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	locked := filepath.Join(dir, "locked")
	os.Mkdir(locked, 0o700)
	type badExec struct {
		name string
		req  protocol.Exec
		kind string
		text string
	}
	tests := []badExec{
		{"empty argv", protocol.Exec{}, protocol.KindRequest, "empty argv"},
		{"too many empty args", protocol.Exec{Argv: make([]string, protocol.MaxArgs+1)}, protocol.KindRequest, "empty argv"},
		{"too many args after a program", protocol.Exec{Argv: append([]string{"true"}, make([]string, protocol.MaxArgs)...)}, protocol.KindRequest, "the limit is 4096"},
		{"env without =", protocol.Exec{Argv: []string{"true"}, Env: []string{"JUSTAKEY"}}, protocol.KindRequest, "environment entry 0 is not KEY=VALUE"},
		{"env with NUL", protocol.Exec{Argv: []string{"true"}, Env: []string{"A=b\x00c"}}, protocol.KindRequest, "NUL"},
		{"unknown user", protocol.Exec{Argv: []string{"true"}, User: "no-such-user"}, protocol.KindUser, `"no-such-user"`},
		{"missing workdir", protocol.Exec{Argv: []string{"true"}, Dir: "/no/such/dir"}, protocol.KindWorkdir, "does not exist"},
		{"workdir is a file", protocol.Exec{Argv: []string{"true"}, Dir: file}, protocol.KindWorkdir, "not a directory"},
	}
	if os.Geteuid() == 0 {
		tests = append(tests, badExec{"workdir the user may not enter", protocol.Exec{Argv: []string{"true"}, User: "nobody", Dir: locked}, protocol.KindWorkdir, "cannot enter"})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := prototest.NewPeer(t, connect(t, srv))
			p.Hello()
			p.Send(protocol.TypeExec, &tt.req)
			p.ExpectError(tt.kind, tt.text)
		})
	}
	stillServes(t, srv)
}

func TestArgvOverFrameLimit(t *testing.T) {
	srv := newServer(t, agent.Config{})
	conn := connect(t, srv)
	p := prototest.NewPeer(t, conn)
	p.Hello()
	// An exec larger than the frame limit is refused from its header.
	go conn.Write(append(prototest.Header(protocol.TypeExec, protocol.MaxPayload+1), make([]byte, 64)...))
	p.ExpectError(protocol.KindProtocol, "exec frame of 1048577 bytes")
	stillServes(t, srv)
}

func TestSessionRejects(t *testing.T) {
	srv := newServer(t, agent.Config{})
	tests := []struct {
		name string
		tty  bool
		send func(w *protocol.Writer, window uint32)
		text string
	}{
		{"second exec", false, func(w *protocol.Writer, _ uint32) {
			w.WriteJSON(protocol.TypeExec, &protocol.Exec{Argv: []string{"true"}})
		}, "unexpected exec frame during a session"},
		{"stdin after EOF", false, func(w *protocol.Writer, _ uint32) {
			w.WriteFrame(protocol.TypeStdinEOF, nil)
			w.WriteFrame(protocol.TypeStdin, []byte("late"))
		}, "stdin data after stdin EOF"},
		{"stdin window overrun", false, func(w *protocol.Writer, window uint32) {
			// Twice the window the agent gave: the program's pipe takes
			// some of it, and acknowledges it, before the writer blocks.
			for i := uint32(0); i < 2*window/(32<<10); i++ {
				w.WriteFrame(protocol.TypeStdin, make([]byte, 32<<10))
			}
		}, "overran the stdin window"},
		{"unknown frame type", true, func(w *protocol.Writer, _ uint32) { w.WriteFramed(prototest.Header(protocol.Type(0x66), 0)) }, "unknown frame type 0x66"},
		{"short resize", true, func(w *protocol.Writer, _ uint32) { w.WriteFrame(protocol.TypeResize, []byte{1, 2}) }, "resize payload has 2 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := connect(t, srv)
			// A program that neither reads nor ends by itself.
			p, st := rawSession(t, conn, protocol.Exec{Argv: []string{"sleep", "600"}, TTY: tt.tty, Stdin: true})
			go tt.send(p.W, st.StdinWindow)
			p.ExpectError(protocol.KindProtocol, tt.text)
			// The session is over: its program is gone.
			waitFor(t, "the session's program to end", 10*time.Second, func() bool { return sessionAlive(st.PID) == 0 })
		})
	}
	stillServes(t, srv)
}

// TestResizeEdgeCases: a resize on a pipe session is ignored, 0x0 is
// ignored, and an absurd size is clamped to protocol.MaxWindowDim.
func TestResizeEdgeCases(t *testing.T) {
	srv := newServer(t, agent.Config{})
	conn := connect(t, srv)
	p, _ := rawSession(t, conn, protocol.Exec{Argv: sh("echo ready; read x; stty size"), Stdin: true, TTY: true,
		Size: protocol.WindowSize{Cols: 80, Rows: 24}})
	waitOutput(t, p.R, "ready")
	p.Send(protocol.TypeResize, protocol.EncodeResize(protocol.WindowSize{Cols: 0, Rows: 0}))
	p.Send(protocol.TypeResize, protocol.EncodeResize(protocol.WindowSize{Cols: 65535, Rows: 65535}))
	p.Send(protocol.TypeStdin, []byte("go\n"))
	waitOutput(t, p.R, "4096 4096")

	conn = connect(t, srv)
	p, _ = rawSession(t, conn, protocol.Exec{Argv: sh("read x; echo pipes-fine"), Stdin: true})
	p.Send(protocol.TypeResize, protocol.EncodeResize(protocol.WindowSize{Cols: 100, Rows: 30}))
	p.Send(protocol.TypeStdin, []byte("go\n"))
	waitOutput(t, p.R, "pipes-fine")
}

func waitOutput(t *testing.T, r *protocol.Reader, want string) {
	t.Helper()
	var out strings.Builder
	for !strings.Contains(out.String(), want) {
		typ, p, err := r.Next()
		if err != nil {
			t.Fatalf("waiting for %q after %q: %v", want, out.String(), err)
		}
		switch typ {
		case protocol.TypeStdout, protocol.TypeStderr:
			out.Write(p)
		case protocol.TypeError, protocol.TypeExit:
			t.Fatalf("session ended with %s %s before %q (output %q)", typ, p, want, out.String())
		}
	}
}

// TestFrameCutByDroppedConnection: half a frame, then the connection is
// gone; the agent logs it and serves the next one.
func TestFrameCutByDroppedConnection(t *testing.T) {
	srv := newServer(t, agent.Config{})
	for _, partial := range [][]byte{
		prototest.Header(protocol.TypeHello, 100)[:2],
		append(prototest.Header(protocol.TypeHello, 100), `{"min_ver`...),
	} {
		conn := connect(t, srv)
		conn.Write(partial)
		conn.Close()
		stillServes(t, srv)
	}
	// And inside a session: the session ends as for any dropped host.
	conn := connect(t, srv)
	p, st := rawSession(t, conn, protocol.Exec{Argv: []string{"sleep", "600"}, Stdin: true})
	p.W.WriteFramed(append(prototest.Header(protocol.TypeStdin, 1000), "only part"...))
	conn.Close()
	waitFor(t, "the session's program to end", 10*time.Second, func() bool { return sessionAlive(st.PID) == 0 })
	stillServes(t, srv)
}

// TestSlowPeerTimesOut: half a frame and silence; the handshake deadline
// frees the connection.
func TestSlowPeerTimesOut(t *testing.T) {
	srv := newServer(t, agent.Config{HandshakeTimeout: 200 * time.Millisecond})
	for _, partial := range [][]byte{
		prototest.Header(protocol.TypeHello, 100)[:3],          // half a header
		append(prototest.Header(protocol.TypeHello, 100), '{'), // half a payload
	} {
		conn := connect(t, srv)
		go conn.Write(partial)
		done := make(chan error, 1)
		go func() {
			_, err := io.Copy(io.Discard, conn)
			done <- err
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("the agent kept a silent half-frame connection open")
		}
	}
	// And one that says hello but never execs.
	conn := connect(t, srv)
	prototest.NewPeer(t, conn).Hello()
	if _, err := io.Copy(io.Discard, conn); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatal(err)
	}
	stillServes(t, srv)
}

// TestHostNeverReads: a program flooding a host that reads nothing stalls
// on its own, the agent does not buffer without bound, and other sessions
// go on.
func TestHostNeverReads(t *testing.T) {
	srv := newServer(t, agent.Config{})
	conn := connect(t, srv)
	_, st := rawSession(t, conn, protocol.Exec{Argv: []string{"yes", "flood"}})
	// Nothing reads conn from here on: the socket's buffers fill, the
	// agent's pump blocks, the program's stdout pipe fills, and yes blocks.
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 0; i < 3; i++ {
		stillServes(t, srv)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapInuse) - int64(before.HeapInuse); grew > 8<<20 {
		t.Fatalf("heap grew by %d bytes while a host read nothing", grew)
	}
	if sessionAlive(st.PID) == 0 {
		t.Fatal("the flooding program should still run, stalled")
	}
}

// TestProgramClosesStdoutRunsOn: closing stdout early does not end the
// session; the exit status still arrives when the program ends.
func TestProgramClosesStdoutRunsOn(t *testing.T) {
	srv := newServer(t, agent.Config{})
	r := run(t, srv, protocol.Exec{Argv: sh("echo before; exec >&-; sleep 0.5; echo on-stderr >&2; exit 3")}, nil)
	if r.err != nil || r.exit.Code != 3 || r.stdout != "before\n" || r.stderr != "on-stderr\n" {
		t.Fatalf("%q %q %+v %v", r.stdout, r.stderr, r.exit, r.err)
	}
}

// TestDaemonHoldingPTY: a daemon that leaves the session but keeps the
// terminal open does not hold the session beyond the drain deadline.
func TestDaemonHoldingPTY(t *testing.T) {
	srv := newServer(t, agent.Config{DrainIdle: 100 * time.Millisecond, DrainMax: time.Second})
	start := time.Now()
	r := run(t, srv, protocol.Exec{Argv: sh("setsid sleep 5 & echo daemon-started"), TTY: true}, nil)
	if r.err != nil || !strings.Contains(r.stdout, "daemon-started") {
		t.Fatalf("%q %v", r.stdout, r.err)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("session took %v with a daemon holding its terminal", d)
	}
}

// failingListener fails its first Accepts as a process out of descriptors
// does, then serves.
type failingListener struct {
	net.Listener
	fails int
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.fails > 0 {
		l.fails--
		return nil, &net.OpError{Op: "accept", Net: "unix", Err: syscall.EMFILE}
	}
	return l.Listener.Accept()
}

// TestAcceptErrorsDoNotStopServing: an accept that fails is retried, not the
// end of the agent and its sessions.
func TestAcceptErrorsDoNotStopServing(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s")
	ul, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := newServer(t, agent.Config{})
	done := make(chan struct{})
	go func() { srv.Serve(&failingListener{Listener: ul, fails: 3}); close(done) }()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	r, w := protocol.NewReader(conn), protocol.NewWriter(conn)
	if _, err := client.Hello(r, w, "test"); err != nil {
		t.Fatalf("no hello after failed accepts: %v", err)
	}
	conn.Close()
	ul.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return when its listener closed")
	}
}
