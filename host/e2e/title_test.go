//go:build linux

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corkvm/cork/host/e2e/termtest"
)

// The program's window title does not stay on the host's window: cork
// pushes the host's titles on xterm's title stack before the session's
// output and pops them after it, on a detach as on an exit.

const (
	pushTitle = "\x1b[22;0t"
	popTitle  = "\x1b[23;0t"
)

// TestTitleStackOrder reads the bytes cork writes to a real PTY: the push
// before the program's title, the pop after it and before cork's message.
func TestTitleStackOrder(t *testing.T) {
	a := startAgent(t)
	setTitle := `printf '\033]2;prog-title\007'; echo ready; sleep 60`
	t.Run("detach", func(t *testing.T) {
		tm := termtest.Start(t, 24, 80, bin.Cork, corkExec(a, "-it", "--keep", "--name", "title", "--", "sh", "-c", setTitle)...)
		tm.WaitLine(t, "ready", func(l string) bool { return strings.HasSuffix(l, "ready") })
		tm.Write(t, "\x00\x11")
		tm.Wait(t)
		inOrder(t, tm.Out.String(), pushTitle, "\x1b]2;prog-title", popTitle, "cork: detached from session")
		corkCmd("kill", "--connect", a.url, "title")
	})
	t.Run("exit", func(t *testing.T) {
		tm := termtest.Start(t, 24, 80, bin.Cork, corkExec(a, "-it", "--", "sh", "-c", `printf '\033]2;prog-title\007'; echo bye`)...)
		tm.Wait(t)
		inOrder(t, tm.Out.String(), pushTitle, "\x1b]2;prog-title", "bye", popTitle)
	})
}

// inOrder fails unless each of want occurs in out once, in order.
func inOrder(t *testing.T, out string, want ...string) {
	t.Helper()
	at := -1
	for _, w := range want {
		if n := strings.Count(out, w); n != 1 {
			t.Fatalf("%q occurs %d times in %q", w, n, out)
		}
		i := strings.Index(out, w)
		if i < at {
			t.Fatalf("%q comes too early in %q; want the order %q", w, out, want)
		}
		at = i
	}
}

// TestTitleBackAfterDetach: in a real tmux pane, the pane's title is the
// host's again after a detach from a program that set its own.
func TestTitleBackAfterDetach(t *testing.T) {
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("tmux is not installed (apt-get install tmux)")
	}
	a := startAgent(t)
	tm := tmux{t: t, socket: fmt.Sprintf("cork-test-%d", time.Now().UnixNano())}
	t.Cleanup(func() { exec.Command("tmux", "-L", tm.socket, "kill-server").Run() })
	dir := t.TempDir()
	wrapper := filepath.Join(dir, "run.sh")
	cork := strings.Join(append([]string{bin.Cork}, corkExec(a, "-it", "--keep", "--name", "tb", "--",
		"sh", "-c", `"printf '\033]2;prog-title\007'; sleep 60"`)...), " ")
	os.WriteFile(wrapper, []byte("printf '\\033]2;host-title\\007'\n"+cork+"\necho CORK_RC=$?\nsleep 60\n"), 0o755)
	tm.run("new-session", "-d", "-s", "tt", "-x", "80", "-y", "24", "sh "+wrapper)
	title := func() string { return strings.TrimSpace(tm.run("display-message", "-p", "-t", "tt", "#{pane_title}")) }
	termtest.WaitFor(t, "the program's title", 20*time.Second, func() bool { return title() == "prog-title" })
	tm.run("send-keys", "-t", "tt", "C-Space", "C-q")
	termtest.WaitFor(t, "cork's exit status", 20*time.Second, func() bool {
		return strings.Contains(tm.run("capture-pane", "-p", "-t", "tt"), "CORK_RC=0")
	})
	if got := title(); got != "host-title" {
		t.Fatalf("after the detach the pane's title is %q, want the host's, host-title", got)
	}
	corkCmd("kill", "--connect", a.url, "tb")
}
