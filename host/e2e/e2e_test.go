//go:build linux

package e2e

import (
	"bytes"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corkvm/cork/host/e2e/harness"
	"github.com/corkvm/cork/host/e2e/termtest"
)

func corkExec(a *agent, args ...string) []string {
	return append([]string{"exec", "--connect", a.url}, args...)
}

// TestSizeAtStart: the program's first look at its terminal sees the
// operator's size, never 0x0 or a made-up 80x24.
func TestSizeAtStart(t *testing.T) {
	a := startAgent(t)
	tm := termtest.Start(t, 43, 132, bin.Cork, corkExec(a, "-it", "--", bin.Probe)...)
	tm.WaitLine(t, "the probe's start line", func(l string) bool { return strings.HasPrefix(l, "start ") })
	if got := termtest.ProbeReports(tm.Out.String(), "start"); len(got) != 1 || got[0] != "43 132" {
		t.Fatalf("probe started at %v, want 43 132", got)
	}
	tm.Write(t, "q\n")
	if code := tm.Wait(t); code != 0 {
		t.Fatalf("cork exited %d", code)
	}
}

// TestResizeReachesProgram: resizing the operator's terminal while the
// session runs delivers SIGWINCH and the new size to the program.
func TestResizeReachesProgram(t *testing.T) {
	a := startAgent(t)
	tm := termtest.Start(t, 24, 80, bin.Cork, corkExec(a, "-it", "--", bin.Probe)...)
	tm.WaitLine(t, "the probe to start", func(l string) bool { return strings.HasPrefix(l, "start ") })
	tm.SetSize(t, 30, 100)
	tm.WaitLine(t, "SIGWINCH with 30x100", func(l string) bool { return strings.HasPrefix(l, "winch 30 100 ") })
	tm.SetSize(t, 50, 200)
	tm.WaitLine(t, "SIGWINCH with 50x200", func(l string) bool { return strings.HasPrefix(l, "winch 50 200 ") })
	tm.Write(t, "q\n")
	tm.Wait(t)
}

// TestResizeBurstEndsAtFinalSize: 500 random sizes set back to back, then a
// known one: whatever was coalesced on the way, the program must end at
// the last size, however many were coalesced on the way.
func TestResizeBurstEndsAtFinalSize(t *testing.T) {
	a := startAgent(t)
	tm := termtest.Start(t, 24, 80, bin.Cork, corkExec(a, "-it", "--", bin.Probe)...)
	tm.WaitLine(t, "the probe to start", func(l string) bool { return strings.HasPrefix(l, "start ") })
	rng := mrand.New(mrand.NewPCG(1, 2))
	for i := 0; i < 500; i++ {
		tm.SetSize(t, uint16(10+rng.IntN(90)), uint16(20+rng.IntN(200)))
	}
	tm.SetSize(t, 61, 233) // outside the random range
	tm.WaitLine(t, "the final size", func(l string) bool { return strings.HasPrefix(l, "winch 61 233 ") })
	// Nothing older may arrive after it: ask the program again.
	before := len(termtest.ProbeReports(tm.Out.String(), "winch"))
	tm.Write(t, "?\n")
	tm.WaitLine(t, "the probe's answer", func(l string) bool { return strings.HasPrefix(l, "size ") })
	winches := termtest.ProbeReports(tm.Out.String(), "winch")
	if got := termtest.ProbeReports(tm.Out.String(), "size"); got[0] != "61 233" || winches[len(winches)-1] != "61 233" {
		t.Fatalf("final size %v, last SIGWINCH %v; want 61 233", got, winches[len(winches)-1])
	}
	t.Logf("500 resizes: the program saw %d SIGWINCH (%d when asked)", len(winches), before)
	tm.Write(t, "q\n")
	tm.Wait(t)
}

// TestRawModeRestored: the operator's terminal leaves the session in the
// mode it entered, whether the program succeeded or failed.
func TestRawModeRestored(t *testing.T) {
	a := startAgent(t)
	for _, script := range []string{"exit 0", "exit 5", "kill -KILL $$"} {
		tm := termtest.Start(t, 24, 80, bin.Cork, corkExec(a, "-it", "--", "sh", "-c", "stty -a; "+script)...)
		before := tm.Initial // read before cork could make it raw
		tm.WaitLine(t, "stty output", func(l string) bool { return strings.Contains(l, "speed") })
		tm.Wait(t)
		after := termios(t, tm.Master)
		if after.Lflag != before.Lflag || after.Iflag != before.Iflag || after.Oflag != before.Oflag {
			t.Fatalf("%s: terminal flags changed: lflag %#x->%#x iflag %#x->%#x", script, before.Lflag, after.Lflag, before.Iflag, after.Iflag)
		}
		if after.Lflag&unix.ICANON == 0 || after.Lflag&unix.ECHO == 0 {
			t.Fatalf("%s: terminal left raw", script)
		}
	}
}

func TestExitStatuses(t *testing.T) {
	a := startAgent(t)
	for _, tt := range []struct {
		args []string
		code int
	}{
		{[]string{"--", "true"}, 0},
		{[]string{"--", "sh", "-c", "exit 3"}, 3},
		{[]string{"--", "no-such-program"}, 127},
		{[]string{"--", "/etc/passwd"}, 126},
		{[]string{"--", "sh", "-c", "kill -INT $$"}, 130},
		{[]string{"-t", "--", "sh", "-c", "kill -KILL $$"}, 137},
		{[]string{"-u", "no-such-user", "--", "true"}, 125},
		{[]string{"-w", "/no/such/dir", "--", "true"}, 125},
	} {
		cmd := exec.Command(bin.Cork, corkExec(a, tt.args...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		cmd.Run()
		if got := cmd.ProcessState.ExitCode(); got != tt.code {
			t.Errorf("cork exec %v: exit %d, want %d (stderr %q)", tt.args, got, tt.code, stderr.String())
		}
		if tt.code == 125 && strings.Count(strings.TrimSpace(stderr.String()), "\n") != 0 {
			t.Errorf("cork exec %v: want a one-line error, got %q", tt.args, stderr.String())
		}
	}
}

func TestCorkOwnErrors(t *testing.T) {
	for _, tt := range []struct {
		args []string
		msg  string
	}{
		{[]string{"exec", "--connect", "unix:///nonexistent/corkd.sock", "--", "true"}, "no such file"},
		{[]string{"exec", "--connect", "tcp://127.0.0.1:1", "--", "true"}, "unknown scheme"},
		{[]string{"exec", "--", "true"}, "no agent given"},
		{[]string{"exec", "--connect", "unix:///x", "--machine", "m", "--", "true"}, "give one"},
		{[]string{"exec", "--connect", "unix:///x"}, "no command"},
		{[]string{"exec", "--bogus", "--", "true"}, "unknown flag"},
		{[]string{"exec", "-e", "=x", "--connect", "unix:///x", "--", "true"}, "no name"},
	} {
		cmd := exec.Command(bin.Cork, tt.args...)
		out, _ := cmd.CombinedOutput()
		if !strings.Contains(strings.ToLower(string(out)), tt.msg) {
			t.Errorf("cork %v: %q does not say %q", tt.args, out, tt.msg)
		}
		if code := cmd.ProcessState.ExitCode(); code != 125 {
			t.Errorf("cork %v: exit %d, want 125", tt.args, code)
		}
	}
}

func TestEnvFlags(t *testing.T) {
	a := startAgent(t)
	envFile := filepath.Join(t.TempDir(), "env")
	os.WriteFile(envFile, []byte("# comment\nFROM_FILE=file value\n\nOVERRIDDEN=file\n"), 0o600)
	cmd := exec.Command(bin.Cork, corkExec(a, "--env-file", envFile, "-e", "OVERRIDDEN=flag", "-e", "HOST_VAR", "-e", "UNSET_VAR",
		"--", "sh", "-c", `echo "$FROM_FILE|$OVERRIDDEN|$HOST_VAR|${UNSET_VAR-unset}"`)...)
	cmd.Env = append(os.Environ(), "HOST_VAR=from host")
	out, err := cmd.Output()
	if err != nil || string(out) != "file value|flag|from host|unset\n" {
		t.Fatalf("env: %q, %v", out, err)
	}
}

// TestSignalsForwarded: SIGTERM sent to cork reaches the program, which
// decides the exit status.
func TestSignalsForwarded(t *testing.T) {
	a := startAgent(t)
	cmd := exec.Command(bin.Cork, corkExec(a, "--", "sh", "-c", "trap 'echo got-term; exit 9' TERM; echo ready; while :; do sleep 0.05; done")...)
	out := &harness.Buffer{}
	cmd.Stdout = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	termtest.WaitFor(t, "the program to start", 10*time.Second, func() bool { return strings.Contains(out.String(), "ready") })
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 9 || !strings.Contains(out.String(), "got-term") {
		t.Fatalf("exit %d, output %q; want 9 and got-term", code, out.String())
	}
}

// TestLostAgent: corkd dying mid-session is never a success.
func TestLostAgent(t *testing.T) {
	a := startAgent(t)
	tm := termtest.Start(t, 24, 80, bin.Cork, corkExec(a, "-it", "--", "sh", "-c", "echo running; sleep 3")...)
	tm.WaitLine(t, "the program to run", func(l string) bool { return l == "running" })
	a.cmd.Process.Kill()
	if code := tm.Wait(t); code != 255 {
		t.Fatalf("cork exited %d after losing corkd, want 255", code)
	}
	if !strings.Contains(tm.Out.String(), "lost") {
		t.Fatalf("no message about the lost agent: %q", tm.Out.String())
	}
	if termios(t, tm.Master).Lflag&unix.ICANON == 0 {
		t.Fatal("terminal left raw after the agent was lost")
	}
}

// TestUnixPeerRefused: a peer whose uid is not allowed is closed before it
// can speak, even when the socket's mode would let it connect.
func TestUnixPeerRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to connect as nobody")
	}
	a := startAgent(t)
	os.Chmod(strings.TrimPrefix(a.url, "unix://"), 0o666)
	cmd := exec.Command(bin.Cork, corkExec(a, "--", "true")...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, _ := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 125 {
		t.Fatalf("nobody's cork exited %d (%q), want 125", code, out)
	}
	termtest.WaitFor(t, "corkd to log the refusal", 5*time.Second, func() bool {
		return strings.Contains(a.logs.String(), "refused unix peer") && strings.Contains(a.logs.String(), "uid=65534")
	})
	// And the socket's own mode is 0600.
	b := startAgent(t)
	st, err := os.Stat(strings.TrimPrefix(b.url, "unix://"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, %v; want 0600", st.Mode().Perm(), err)
	}
}

func machineExec(args ...string) []string {
	return append([]string{"exec", "--machine", "bottle", "--smolvm", bin.Standin, "--agent", bin.Corkd}, args...)
}

// TestMachineTransport runs sessions in-band through the smolvm stand-in:
// stdout and stderr apart, stdin EOF as a frame, exit status, 1 MiB whole.
func TestMachineTransport(t *testing.T) {
	t.Run("pipes", func(t *testing.T) {
		cmd := exec.Command(bin.Cork, machineExec("-i", "--", "sh", "-c", "cat; echo to-err >&2; exit 3")...)
		cmd.Stdin = strings.NewReader("stdin through smolvm\n")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		cmd.Run()
		if code := cmd.ProcessState.ExitCode(); code != 3 || stdout.String() != "stdin through smolvm\n" || !strings.Contains(stderr.String(), "to-err") {
			t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
		}
	})
	t.Run("1MiB", func(t *testing.T) {
		data := make([]byte, 1<<20)
		rand.Read(data)
		f := filepath.Join(t.TempDir(), "data")
		os.WriteFile(f, data, 0o644)
		out, err := exec.Command(bin.Cork, machineExec("--", "cat", f)...).Output()
		if err != nil || !bytes.Equal(out, data) {
			t.Fatalf("got %d bytes (equal %v), %v", len(out), bytes.Equal(out, data), err)
		}
	})
	t.Run("stdin 1MiB", func(t *testing.T) {
		data := make([]byte, 1<<20)
		rand.Read(data)
		cmd := exec.Command(bin.Cork, machineExec("-i", "--", "sh", "-c", "cat | md5sum")...)
		cmd.Stdin = bytes.NewReader(data)
		out, err := cmd.Output()
		if want := fmt.Sprintf("%x", md5sum(data)); err != nil || !strings.HasPrefix(string(out), want) {
			t.Fatalf("md5 %q, want %s (%v)", out, want, err)
		}
	})
	t.Run("tty size and resize", func(t *testing.T) {
		tm := termtest.Start(t, 33, 111, bin.Cork, machineExec("-it", "--", bin.Probe)...)
		tm.WaitLine(t, "the probe to start", func(l string) bool { return strings.HasPrefix(l, "start ") })
		if got := termtest.ProbeReports(tm.Out.String(), "start"); got[0] != "33 111" {
			t.Fatalf("started at %v, want 33 111", got)
		}
		tm.SetSize(t, 44, 155)
		tm.WaitLine(t, "SIGWINCH with 44x155", func(l string) bool { return strings.HasPrefix(l, "winch 44 155 ") })
		tm.Write(t, "q\n")
		if code := tm.Wait(t); code != 0 {
			t.Fatalf("cork exited %d", code)
		}
	})
	t.Run("smolvm fails", func(t *testing.T) {
		cmd := exec.Command(bin.Cork, "exec", "--machine", "bottle", "--smolvm", bin.Standin, "--agent", "/no/such/corkd", "--", "true")
		out, _ := cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); code == 0 || !strings.Contains(string(out), "cork:") {
			t.Fatalf("exit %d, %q: want a failure that says so", code, out)
		}
	})
}
