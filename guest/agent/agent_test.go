package agent_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corkvm/cork/guest/agent"
	"github.com/corkvm/cork/host/client"
	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/prototest"
)

// These tests run a real agent in memory, one tiny program per behaviour,
// with the real host client as its peer. The two are joined by a unix
// socket pair, not net.Pipe: the agent reads a socket through Go's poller
// until a session takes it over and then in the session's own thread
// (threadconn.go), and only a socket takes that path. The user switch,
// which needs root, is tested in integration_users_test.go.

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch users")
	}
}

func newServer(t *testing.T, cfg agent.Config) *agent.Server {
	t.Helper()
	if cfg.FreeMemoryAfter == 0 {
		// No server frees memory (a forced collection) while a later
		// test counts collections.
		cfg.FreeMemoryAfter = time.Hour
	}
	return agent.New(cfg)
}

// connect returns the host end of a connection served by srv.
func connect(t *testing.T, srv *agent.Server) net.Conn {
	t.Helper()
	return connectAs(t, srv, func(c net.Conn) net.Conn { return c })
}

// connectAs is connect with the guest end as wrap makes it (a peer the
// listener identified, say).
func connectAs(t *testing.T, srv *agent.Server, wrap func(net.Conn) net.Conn) net.Conn {
	t.Helper()
	host, guest := prototest.SocketPair(t)
	return serveConn(t, srv, host, wrap(guest))
}

// connectPipe is connect over net.Pipe, for a test of a client that reads
// nothing: the agent's first write to it waits at once, where a socket's
// buffer would take that write and many after it.
func connectPipe(t *testing.T, srv *agent.Server) net.Conn {
	t.Helper()
	host, guest := net.Pipe()
	return serveConn(t, srv, host, guest)
}

// serveConn has srv serve guest until the test ends, and returns host.
func serveConn(t *testing.T, srv *agent.Server, host, guest net.Conn) net.Conn {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.ServeConn(guest)
	}()
	t.Cleanup(func() {
		host.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("agent did not finish serving the connection")
		}
	})
	return host
}

type result struct {
	stdout, stderr string
	exit           protocol.Exit
	err            error
}

func run(t *testing.T, srv *agent.Server, req protocol.Exec, stdin io.Reader) result {
	t.Helper()
	var out, errOut bytes.Buffer
	s := &client.Session{Exec: req, Stdin: stdin, Stdout: &out, Stderr: &errOut}
	if stdin != nil {
		s.Exec.Stdin = true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	exit, err := s.Run(ctx, connect(t, srv))
	return result{out.String(), errOut.String(), exit, err}
}

func sh(script string) []string { return []string{"/bin/sh", "-c", script} }

func TestPTYSizeAtStart(t *testing.T) {
	srv := newServer(t, agent.Config{})
	r := run(t, srv, protocol.Exec{Argv: []string{"stty", "size"}, TTY: true,
		Size: protocol.WindowSize{Cols: 137, Rows: 41}}, nil)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if got := strings.TrimSpace(r.stdout); got != "41 137" {
		t.Fatalf("stty size at start: %q, want \"41 137\"", got)
	}
}

func TestPTYFallbackSizeWithoutHostTerminal(t *testing.T) {
	srv := newServer(t, agent.Config{})
	r := run(t, srv, protocol.Exec{Argv: []string{"stty", "size"}, TTY: true}, nil)
	if got := strings.TrimSpace(r.stdout); r.err != nil || got != "24 80" {
		t.Fatalf("stty size with no size sent: %q, %v; want \"24 80\", never 0 0", got, r.err)
	}
}

func TestPTYIsControllingTerminal(t *testing.T) {
	srv := newServer(t, agent.Config{})
	// /dev/tty opens only for a process with a controlling terminal.
	r := run(t, srv, protocol.Exec{Argv: sh(`echo "$(tty)"; test -t 0 && echo ok >/dev/tty`), TTY: true}, nil)
	if r.err != nil || !strings.Contains(r.stdout, "/dev/pts/") || !strings.Contains(r.stdout, "ok") {
		t.Fatalf("tty: %q, %v", r.stdout, r.err)
	}
}

func TestDefaultTerm(t *testing.T) {
	srv := newServer(t, agent.Config{})
	r := run(t, srv, protocol.Exec{Argv: sh(`echo "$TERM"`), TTY: true}, nil)
	if got := strings.TrimSpace(r.stdout); got != agent.DefaultTerm {
		t.Fatalf("TERM with none sent: %q, want %q", got, agent.DefaultTerm)
	}
	r = run(t, srv, protocol.Exec{Argv: sh(`echo "$TERM"`), TTY: true, Term: "vt100"}, nil)
	if got := strings.TrimSpace(r.stdout); got != "vt100" {
		t.Fatalf("TERM sent as vt100: %q", got)
	}
}

func TestSeparateStdoutStderr(t *testing.T) {
	srv := newServer(t, agent.Config{})
	r := run(t, srv, protocol.Exec{Argv: sh("echo to-out; echo to-err >&2; echo more-out")}, nil)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.stdout != "to-out\nmore-out\n" || r.stderr != "to-err\n" {
		t.Fatalf("stdout %q, stderr %q", r.stdout, r.stderr)
	}
}

func TestStdinEOFEndsPipeProgram(t *testing.T) {
	srv := newServer(t, agent.Config{})
	r := run(t, srv, protocol.Exec{Argv: []string{"cat"}}, strings.NewReader("line one\nno newline"))
	if r.err != nil || r.exit.Code != 0 {
		t.Fatalf("cat: %+v, %v", r.exit, r.err)
	}
	if r.stdout != "line one\nno newline" {
		t.Fatalf("cat echoed %q", r.stdout)
	}
}

func TestStdinEOFEndsPTYProgram(t *testing.T) {
	srv := newServer(t, agent.Config{})
	for _, input := range []string{"whole line\n", "partial line", ""} {
		r := run(t, srv, protocol.Exec{Argv: sh("cat; echo cat-ended"), TTY: true}, strings.NewReader(input))
		if r.err != nil || r.exit.Code != 0 || !strings.Contains(r.stdout, "cat-ended") {
			t.Fatalf("input %q: %q, %+v, %v", input, r.stdout, r.exit, r.err)
		}
		if input != "" && !strings.Contains(r.stdout, strings.TrimSpace(input)) {
			t.Fatalf("input %q not echoed: %q", input, r.stdout)
		}
	}
}

func TestNoStdinIsEmpty(t *testing.T) {
	srv := newServer(t, agent.Config{})
	r := run(t, srv, protocol.Exec{Argv: []string{"wc", "-c"}}, nil)
	if r.err != nil || strings.TrimSpace(r.stdout) != "0" {
		t.Fatalf("wc -c without stdin: %q, %v", r.stdout, r.err)
	}
}

func TestExitCodes(t *testing.T) {
	srv := newServer(t, agent.Config{})
	dir := t.TempDir()
	notExec := filepath.Join(dir, "script")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\necho ran\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		argv   []string
		tty    bool
		code   int
		signal string
		stderr string
	}{
		{"success", []string{"true"}, false, 0, "", ""},
		{"status 3", sh("exit 3"), false, 3, "", ""},
		{"not found", []string{"no-such-program-here"}, false, 127, "", "not found"},
		{"not found absolute", []string{"/no/such/program"}, false, 127, "", "no such file"},
		{"not executable", []string{notExec}, false, 126, "", "permission denied"},
		{"directory", []string{dir}, false, 126, "", "permission denied"},
		{"SIGINT", sh("kill -INT $$"), false, 130, "INT", ""},
		{"SIGKILL", sh("kill -KILL $$"), false, 137, "KILL", ""},
		{"SIGKILL on a PTY", sh("kill -KILL $$"), true, 137, "KILL", ""},
		{"not found on a PTY", []string{"no-such-program-here"}, true, 127, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, srv, protocol.Exec{Argv: tt.argv, TTY: tt.tty}, nil)
			if r.err != nil {
				t.Fatal(r.err)
			}
			if r.exit.Code != tt.code || r.exit.Signal != tt.signal {
				t.Fatalf("exit %+v, want code %d signal %q", r.exit, tt.code, tt.signal)
			}
			if !strings.Contains(strings.ToLower(r.stderr), tt.stderr) {
				t.Fatalf("stderr %q does not say %q", r.stderr, tt.stderr)
			}
		})
	}
}

func TestUnknownUser(t *testing.T) {
	srv := newServer(t, agent.Config{})
	marker := filepath.Join(t.TempDir(), "ran")
	r := run(t, srv, protocol.Exec{User: "no-such-user-x", Argv: []string{"touch", marker}}, nil)
	var perr *protocol.Error
	if !errors.As(r.err, &perr) || perr.Kind != protocol.KindUser || !strings.Contains(perr.Message, `"no-such-user-x"`) {
		t.Fatalf("got %v, want a user error naming the user", r.err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the program ran for an unknown user")
	}
}

func TestWorkdir(t *testing.T) {
	srv := newServer(t, agent.Config{})
	dir := t.TempDir()
	r := run(t, srv, protocol.Exec{Dir: dir, Argv: []string{"pwd"}}, nil)
	if r.err != nil || strings.TrimSpace(r.stdout) != dir {
		t.Fatalf("pwd in %s: %q, %v", dir, r.stdout, r.err)
	}
	r = run(t, srv, protocol.Exec{Dir: filepath.Join(dir, "missing"), Argv: []string{"pwd"}}, nil)
	var perr *protocol.Error
	if !errors.As(r.err, &perr) || perr.Kind != protocol.KindWorkdir || !strings.Contains(perr.Message, "does not exist") {
		t.Fatalf("missing workdir: %v", r.err)
	}
}

func TestEnvironment(t *testing.T) {
	srv := newServer(t, agent.Config{})
	r := run(t, srv, protocol.Exec{Env: []string{"A=1", "B=x=y", "A=2", "HOME=/override"},
		Argv: sh(`echo "$A $B $HOME"; test -n "$PATH" && echo path`)}, nil)
	if r.err != nil || r.stdout != "2 x=y /override\npath\n" {
		t.Fatalf("env: %q, %v", r.stdout, r.err)
	}
}

// TestLargeOutputThenExit sends 1 MiB and exits at once: every byte must
// arrive before the exit status.
func TestLargeOutputThenExit(t *testing.T) {
	srv := newServer(t, agent.Config{})
	data := make([]byte, 1<<20)
	rand.Read(data)
	f := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(f, data, 0o644); err != nil {
		t.Fatal(err)
	}
	r := run(t, srv, protocol.Exec{Argv: []string{"cat", f}}, nil)
	if r.err != nil || r.stdout != string(data) {
		t.Fatalf("pipe: got %d bytes (equal: %v), %v", len(r.stdout), r.stdout == string(data), r.err)
	}
	// On a PTY, bytes without newlines pass through unchanged.
	r = run(t, srv, protocol.Exec{Argv: sh(`head -c 1048576 /dev/zero | tr '\0' a`), TTY: true}, nil)
	if r.err != nil || len(r.stdout) != 1<<20 || strings.Trim(r.stdout, "a") != "" {
		t.Fatalf("pty: got %d bytes, %v", len(r.stdout), r.err)
	}
}

// TestBackgroundChildDoesNotHang: a child left holding the terminal or the
// pipes must not keep the session open beyond the drain deadline.
func TestBackgroundChildDoesNotHang(t *testing.T) {
	srv := newServer(t, agent.Config{DrainIdle: 100 * time.Millisecond, DrainMax: time.Second})
	for _, tty := range []bool{true, false} {
		start := time.Now()
		r := run(t, srv, protocol.Exec{Argv: sh("sleep 60 & echo main-done; exit 4"), TTY: tty}, nil)
		if r.err != nil || r.exit.Code != 4 || !strings.Contains(r.stdout, "main-done") {
			t.Fatalf("tty=%v: %q %+v %v", tty, r.stdout, r.exit, r.err)
		}
		if d := time.Since(start); d > 15*time.Second {
			t.Fatalf("tty=%v: session took %v with a background child", tty, d)
		}
	}
}

// rawSession speaks the protocol by hand for the tests that need the pid
// or that misbehave on purpose.
func rawSession(t *testing.T, conn net.Conn, req protocol.Exec) (*prototest.Peer, protocol.Started) {
	t.Helper()
	p := prototest.NewPeer(t, conn)
	p.Hello()
	return p, p.Exec(req)
}

// sessionAlive reports how many live processes are in session sid.
func sessionAlive(sid int) int { return len(agent.SessionMembers(sid)) }

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
	}
}

func TestDroppedConnectionLeavesNothing(t *testing.T) {
	srv := newServer(t, agent.Config{DisconnectGrace: 300 * time.Millisecond})
	for _, tc := range []struct {
		name string
		req  protocol.Exec
	}{
		{"pty", protocol.Exec{Argv: sh("sleep 600 & sleep 600"), TTY: true}},
		{"pipes", protocol.Exec{Argv: sh("sleep 600 & sleep 600")}},
		// Ignores SIGHUP, so only the SIGKILL after the grace ends it.
		{"hup ignored", protocol.Exec{Argv: sh("trap '' HUP; sleep 600 & sleep 600")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := connect(t, srv)
			p, st := rawSession(t, conn, tc.req)
			p.Drain()
			waitFor(t, "the session's processes to start", 5*time.Second, func() bool { return sessionAlive(st.PID) >= 3 })
			conn.Close()
			waitFor(t, "every process of the session to end", 10*time.Second, func() bool { return sessionAlive(st.PID) == 0 })
		})
	}
}

func TestSignalForwarded(t *testing.T) {
	srv := newServer(t, agent.Config{})
	conn := connect(t, srv)
	p, _ := rawSession(t, conn, protocol.Exec{Argv: sh("trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.05; done")})
	sent := false
	out, _, exit := p.Output(func(out string) {
		if strings.Contains(out, "ready") && !sent {
			sent = true
			// SIGURG is the Go runtime's and must be refused; TERM goes through.
			p.Send(protocol.TypeSignal, &protocol.Signal{Name: "URG"})
			p.Send(protocol.TypeSignal, &protocol.Signal{Name: "TERM"})
		}
	})
	if exit.Code != 7 || !strings.Contains(out, "got-term") {
		t.Fatalf("exit %+v after %q", exit, out)
	}
}

// TestResizeDuringUnreadPaste: a program that does not read its input must
// not delay a resize sent after a paste that fills the terminal's buffer.
func TestResizeDuringUnreadPaste(t *testing.T) {
	srv := newServer(t, agent.Config{})
	conn := connect(t, srv)
	p, st := rawSession(t, conn, protocol.Exec{TTY: true, Stdin: true, Size: protocol.WindowSize{Cols: 80, Rows: 24},
		Argv: sh("trap 'stty size' WINCH; echo ready; while :; do sleep 0.05; done")})
	// A paste as large as the window: the terminal takes about 4 KiB
	// before the writer blocks on a program that never reads.
	paste := bytes.Repeat([]byte("x"), int(st.StdinWindow))
	waitOutput(t, p.R, "ready")
	for i := 0; i < len(paste); i += 32 << 10 {
		p.Send(protocol.TypeStdin, paste[i:min(i+32<<10, len(paste))])
	}
	p.Send(protocol.TypeResize, protocol.EncodeResize(protocol.WindowSize{Cols: 99, Rows: 33}))
	waitOutput(t, p.R, "33 99")
}

// TestStatsCountAppliedResizes: the figures count the sizes applied to a
// terminal, and not the ones ignored (no size, or a session on pipes).
func TestStatsCountAppliedResizes(t *testing.T) {
	srv := newServer(t, agent.Config{})
	p, _ := rawSession(t, connect(t, srv), protocol.Exec{TTY: true, Stdin: true, Size: protocol.WindowSize{Cols: 80, Rows: 24},
		Argv: sh("echo ready; read x; stty size")})
	pipes, _ := rawSession(t, connect(t, srv), protocol.Exec{Stdin: true, Argv: sh("echo ready; read x; echo pipes-done")})
	waitOutput(t, p.R, "ready")
	waitOutput(t, pipes.R, "ready")
	pipes.Send(protocol.TypeResize, protocol.EncodeResize(protocol.WindowSize{Cols: 100, Rows: 30}))
	pipes.Send(protocol.TypeStdin, []byte("go\n"))
	waitOutput(t, pipes.R, "pipes-done")
	for _, s := range []protocol.WindowSize{{Cols: 90, Rows: 30}, {}, {Cols: 91, Rows: 31}, {Cols: 92, Rows: 32}} {
		p.Send(protocol.TypeResize, protocol.EncodeResize(s))
	}
	p.Send(protocol.TypeStdin, []byte("go\n"))
	waitOutput(t, p.R, "32 92") // every frame before it has been handled
	if got := srv.ReadStats().Resizes; got != 3 {
		t.Fatalf("Stats.Resizes = %d after three sizes applied, an empty one and one to pipes; want 3", got)
	}
}

func TestConcurrentSessionsNoCrossTalk(t *testing.T) {
	srv := newServer(t, agent.Config{})
	const n = 16
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each session has a letter of its own, so that a byte of
			// another's shows even inside a PTY's interleaved echo.
			letter := string(rune('A' + i))
			tag := strings.Repeat(letter, 10)
			input := strings.Repeat(tag+"\n", 2000)
			// A PTY echoes input and may drop echoes when its output is
			// full (the kernel's n_tty does), so PTY sessions report a
			// checksum of what they read instead of the bytes.
			script := `echo "start $TAG"; cat; echo "end $TAG" >&2; exit ` + strconv.Itoa(i)
			if i%2 == 1 {
				script = `echo "start $TAG"; md5sum; echo "end $TAG" >&2; exit ` + strconv.Itoa(i)
			}
			r := run(t, srv, protocol.Exec{Argv: sh(script), Env: []string{"TAG=" + tag}, TTY: i%2 == 1}, strings.NewReader(input))
			if i%2 == 1 {
				for j := 0; j < n; j++ {
					if other := string(rune('A' + j)); j != i && strings.Contains(r.stdout, other) {
						errs <- fmt.Errorf("session %s: output holds session %s's bytes", letter, other)
					}
				}
				sum := fmt.Sprintf("%x", md5.Sum([]byte(input)))
				for _, want := range []string{"start " + tag, sum, "end " + tag} {
					if !strings.Contains(r.stdout, want) {
						errs <- fmt.Errorf("session %s: output lacks %q", letter, want)
					}
				}
			} else if want := "start " + tag + "\n" + input; r.stdout != want || r.stderr != "end "+tag+"\n" {
				errs <- fmt.Errorf("session %s: stdout %d bytes (want %d), stderr %q", letter, len(r.stdout), len(want), r.stderr)
			}
			if r.err != nil || r.exit.Code != i {
				errs <- fmt.Errorf("session %s: exit %+v, %v", letter, r.exit, r.err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestPing(t *testing.T) {
	srv := newServer(t, agent.Config{Software: "corkd test"})
	p := prototest.NewPeer(t, connect(t, srv))
	if h := p.Hello(); h.Software != "corkd test" || h.Version != protocol.MaxVersion {
		t.Fatalf("hello %+v", h)
	}
	p.Send(protocol.TypePing, []byte("abc"))
	if pong := p.Expect(protocol.TypePong); string(pong) != "abc" {
		t.Fatalf("pong %q", pong)
	}
}

// TestRelativeProgramInWorkdir: a program named with a relative path is
// found relative to the session's working directory, not corkd's.
func TestRelativeProgramInWorkdir(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "here"), []byte("#!/bin/sh\necho found\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	srv := newServer(t, agent.Config{})
	r := run(t, srv, protocol.Exec{Dir: dir, Argv: []string{"./here"}}, nil)
	if r.err != nil || r.exit.Code != 0 || r.stdout != "found\n" {
		t.Fatalf("./here in %s: exit %d, %q, %q, %v", dir, r.exit.Code, r.stdout, r.stderr, r.err)
	}
}

// TestAgentShellVariablesDoNotLeak: the shell that started corkd leaves its
// PWD, OLDPWD, SHLVL and _ in corkd's environment; a session gets its own
// working directory as PWD and none of the others.
func TestAgentShellVariablesDoNotLeak(t *testing.T) {
	t.Setenv("PWD", "/where/corkd/was/started")
	t.Setenv("OLDPWD", "/before/that")
	t.Setenv("SHLVL", "3")
	t.Setenv("_", "/usr/sbin/corkd")
	t.Setenv("NOTIFY_SOCKET", "/run/systemd/notify")
	t.Setenv("CORK_IMAGE_VAR", "kept")
	dir := t.TempDir()
	srv := newServer(t, agent.Config{})
	r := run(t, srv, protocol.Exec{Dir: dir, Argv: []string{"env"}}, nil)
	if r.err != nil {
		t.Fatal(r.err)
	}
	env := strings.Split(strings.TrimSpace(r.stdout), "\n")
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "PWD":
			if v != dir {
				t.Errorf("PWD=%q, want the session's working directory %q", v, dir)
			}
		case "OLDPWD", "SHLVL", "_", "NOTIFY_SOCKET":
			t.Errorf("corkd's %s leaked into the session", kv)
		}
	}
	if !slices.Contains(env, "PWD="+dir) || !slices.Contains(env, "CORK_IMAGE_VAR=kept") {
		t.Errorf("environment %q: want PWD=%s and the image's CORK_IMAGE_VAR", env, dir)
	}
	// A PWD the host asks for wins, as every -e value does.
	r = run(t, srv, protocol.Exec{Dir: dir, Env: []string{"PWD=/asked"}, Argv: []string{"printenv", "PWD"}}, nil)
	if r.stdout != "/asked\n" {
		t.Errorf("PWD asked for: %q", r.stdout)
	}
}
