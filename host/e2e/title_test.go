//go:build linux

package e2e

import (
	"os"
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
	t.Run("attach", func(t *testing.T) {
		// The program sets its title when the attach makes it repaint.
		tm := termtest.Start(t, 24, 80, bin.Cork, corkExec(a, "-it", "--keep", "--name", "titled", "--",
			"sh", "-c", `trap 'printf "\033]2;prog-title\007"; echo repainted' WINCH; echo ready; while :; do sleep 0.05; done`)...)
		tm.WaitLine(t, "ready", func(l string) bool { return strings.HasSuffix(l, "ready") })
		tm.Write(t, "\x00\x11")
		tm.Wait(t)
		tm2 := termtest.Start(t, 24, 80, bin.Cork, "attach", "--connect", a.url, "titled")
		tm2.WaitLine(t, "the repaint", func(l string) bool { return strings.HasSuffix(l, "repainted") })
		tm2.Write(t, "\x00\x11")
		tm2.Wait(t)
		inOrder(t, tm2.Out.String(), pushTitle, "\x1b]2;prog-title", popTitle, "cork: detached from session")
		corkCmd("kill", "--connect", a.url, "titled")
	})
	t.Run("exit", func(t *testing.T) {
		tm := termtest.Start(t, 24, 80, bin.Cork, corkExec(a, "-it", "--", "sh", "-c", `printf '\033]2;prog-title\007'; echo bye`)...)
		tm.Wait(t)
		inOrder(t, tm.Out.String(), pushTitle, "\x1b]2;prog-title", "bye", popTitle)
	})
}

// inOrder fails unless each of want occurs in out, every occurrence after
// every one of the one before, and the title stack is pushed and popped
// once.
func inOrder(t *testing.T, out string, want ...string) {
	t.Helper()
	for _, seq := range []string{pushTitle, popTitle} {
		if n := strings.Count(out, seq); n != 1 {
			t.Fatalf("%q occurs %d times in %q, want once", seq, n, out)
		}
	}
	for i, w := range want {
		if !strings.Contains(out, w) {
			t.Fatalf("no %q in %q", w, out)
		}
		if i > 0 && strings.Index(out, w) < strings.LastIndex(out, want[i-1]) {
			t.Fatalf("%q comes before %q ends in %q; want the order %q", w, want[i-1], out, want)
		}
	}
}

// TestTitleBackAfterDetach: in a real tmux pane, the pane's title is the
// host's again after a detach from a program that set its own.
func TestTitleBackAfterDetach(t *testing.T) {
	needTools(t, "tmux")
	a := startAgent(t)
	tm := newTmux(t)
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
