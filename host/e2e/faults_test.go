//go:build linux

package e2e

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corkvm/cork/guest/procfs"
	"github.com/corkvm/cork/host/client"
	"github.com/corkvm/cork/host/e2e/harness"
	"github.com/corkvm/cork/host/e2e/termtest"
	"github.com/corkvm/cork/protocol"
)

// TestHostKilledMidSession: cork killed with SIGKILL (no chance to say
// goodbye) still ends the session's whole process group in bounded time.
func TestHostKilledMidSession(t *testing.T) {
	a := startAgent(t, "--disconnect-grace", "500ms")
	for _, tty := range []bool{false, true} {
		args := []string{"--", "sh", "-c", "trap '' HUP; sleep 600 & echo started; sleep 600"}
		if tty {
			args = append([]string{"-t"}, args...)
		}
		cmd := exec.Command(bin.Cork, corkExec(a, args...)...)
		out := &harness.Buffer{}
		cmd.Stdout = out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		termtest.WaitFor(t, "the session to start", 10*time.Second, func() bool { return strings.Contains(out.String(), "started") })
		pids := descendants(a.cmd.Process.Pid)
		if len(pids) < 3 {
			t.Fatalf("tty=%v: want the shell and two sleeps under corkd, found %v", tty, pids)
		}
		cmd.Process.Kill()
		cmd.Wait()
		termtest.WaitFor(t, "every process of the session to end", 10*time.Second, func() bool {
			for _, p := range pids {
				if alive(p) {
					return false
				}
			}
			return true
		})
	}
}

// descendants lists the processes below pid.
func descendants(pid int) []int {
	var out []int
	for c := range children(pid) {
		out = append(out, c)
		out = append(out, descendants(c)...)
	}
	return out
}

// alive reports whether pid runs (a zombie does not).
func alive(pid int) bool {
	st, err := procfs.ReadStat(pid)
	return err == nil && st.State != "Z"
}

// TestAgentNotRoot: a corkd running as an ordinary user serves that user
// and refuses any other with a message that says why.
func TestAgentNotRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to start corkd as nobody")
	}
	dir, err := os.MkdirTemp(bin.Dir, "nobody")
	if err != nil {
		t.Fatal(err)
	}
	os.Chown(dir, 65534, 65534)
	sock := filepath.Join(dir, "corkd.sock")
	agent := exec.Command(bin.Corkd, "serve", "--listen", "unix://"+sock)
	agent.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	logs := &harness.Buffer{}
	agent.Stderr = logs
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agent.Process.Kill(); agent.Wait() })
	termtest.WaitFor(t, "corkd as nobody to listen", 10*time.Second, func() bool { _, err := os.Stat(sock); return err == nil })

	run := func(args ...string) (string, int) {
		cmd := exec.Command(bin.Cork, append([]string{"exec", "--connect", "unix://" + sock}, args...)...)
		out, _ := cmd.CombinedOutput()
		return string(out), cmd.ProcessState.ExitCode()
	}
	if out, code := run("-u", "root", "--", "true"); code != 125 || !strings.Contains(out, "not root") || !strings.Contains(out, "cannot switch to user \"root\"") {
		t.Fatalf("session for root from a corkd running as nobody: exit %d, %q", code, out)
	}
	for _, args := range [][]string{{"--", "id", "-u"}, {"-u", "nobody", "--", "id", "-u"}, {"-u", "65534", "--", "id", "-u"}} {
		if out, code := run(args...); code != 0 || strings.TrimSpace(out) != "65534" {
			t.Fatalf("cork exec %v from a corkd running as nobody: exit %d, %q", args, code, out)
		}
	}
}

// TestSecretsNeverLogged: nothing of the exec request's environment reaches
// corkd's log, at the most verbose level, on success or on refusal.
func TestSecretsNeverLogged(t *testing.T) {
	a := startAgent(t, "--log-level", "debug")
	const secret = "hunter2-d0-not-log-me"
	for _, args := range [][]string{
		{"-e", "API_KEY=" + secret, "--", "sh", "-c", "test \"$API_KEY\" = " + secret},
		{"-e", "API_KEY=" + secret, "-t", "--", "true"},
		{"-e", "API_KEY=" + secret, "-u", "no-such-user", "--", "true"},
		{"-e", "API_KEY=" + secret, "--", "no-such-program"},
	} {
		exec.Command(bin.Cork, corkExec(a, args...)...).Run()
	}
	// Refused by corkd's own check (cork would not send it): an entry
	// without '=' that is itself the secret.
	conn, err := net.Dial("unix", strings.TrimPrefix(a.url, "unix://"))
	if err != nil {
		t.Fatal(err)
	}
	r, w := protocol.NewReader(conn), protocol.NewWriter(conn)
	if _, err := client.Hello(r, w, "test"); err != nil {
		t.Fatal(err)
	}
	w.WriteJSON(protocol.TypeExec, &protocol.Exec{Argv: []string{"true"}, Env: []string{secret}})
	r.Next()
	conn.Close()
	termtest.WaitFor(t, "the sessions to be logged", 10*time.Second, func() bool { return strings.Count(a.logs.String(), "msg=") >= 5 })
	if strings.Contains(a.logs.String(), secret) || strings.Contains(a.logs.String(), "hunter2") {
		t.Fatalf("corkd logged a secret:\n%s", a.logs.String())
	}
}

// TestSessionLimit: past --max-sessions a connection gets a busy error, and
// sessions below the limit are untouched.
func TestSessionLimit(t *testing.T) {
	a := startAgent(t, "--max-sessions", "1")
	first := exec.Command(bin.Cork, corkExec(a, "--", "sh", "-c", "echo running; sleep 2; echo done")...)
	out := &harness.Buffer{}
	first.Stdout = out
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	termtest.WaitFor(t, "the first session", 10*time.Second, func() bool { return strings.Contains(out.String(), "running") })
	second, _ := exec.Command(bin.Cork, corkExec(a, "--", "true")...).CombinedOutput()
	if !strings.Contains(string(second), "limit of 1 sessions") {
		t.Fatalf("second session: %q, want a busy error", second)
	}
	if err := first.Wait(); err != nil || !strings.Contains(out.String(), "done") {
		t.Fatalf("first session: %v, %q", err, out.String())
	}
}
