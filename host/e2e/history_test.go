//go:build linux

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corkvm/cork/host/e2e/termtest"
)

// TestAttachHistoryOnce: attaching again and again in one tmux pane to a
// session that wrote nothing meanwhile leaves one copy of the session's
// scrolled-off lines in the pane's history, not one per attach; another
// pane gets them once.
func TestAttachHistoryOnce(t *testing.T) {
	needTools(t, "tmux")
	a := startAgent(t)
	tm := newTmux(t)
	dir := t.TempDir()
	prog := filepath.Join(dir, "prog.sh")
	os.WriteFile(prog, []byte("for i in $(seq 1 60); do echo \"L$i.\"; done\necho ready\nwhile :; do sleep 1; done\n"), 0o755)
	cork := strings.Join(append([]string{bin.Cork}, corkExec(a, "-it", "--keep", "--name", "h", "--", "sh", prog)...), " ")
	attach := bin.Cork + " attach --connect " + a.url + " h"
	script := cork + "\necho RC0\n"
	const attaches = 3
	for i := 1; i <= attaches; i++ {
		script += fmt.Sprintf("read go\n%s\necho RC%d\n", attach, i)
	}
	wrapper := filepath.Join(dir, "run.sh")
	os.WriteFile(wrapper, []byte(script+"sleep 60\n"), 0o755)
	tm.run("new-session", "-d", "-s", "one", "-x", "80", "-y", "24", "sh "+wrapper)
	history := func(pane string) string { return tm.run("capture-pane", "-p", "-J", "-S", "-", "-t", pane) }
	termtest.WaitFor(t, "the program's lines", 20*time.Second, func() bool { return strings.Contains(history("one"), "ready") })
	for i := 0; i <= attaches; i++ {
		// The keys go to a cork that drives the session (and so has the
		// terminal raw), not to the one before it or to the shell.
		termtest.WaitFor(t, "cork to drive the session", 20*time.Second, func() bool {
			s, ok := a.session(t, "h")
			return ok && s.Attached
		})
		tm.run("send-keys", "-t", "one", "C-Space", "C-q")
		termtest.WaitFor(t, fmt.Sprintf("RC%d", i), 20*time.Second, func() bool { return strings.Contains(history("one"), fmt.Sprintf("RC%d", i)) })
		a.waitDetached(t, "h")
		if i < attaches {
			tm.run("send-keys", "-t", "one", "Enter") // the next attach
		}
	}
	if n := strings.Count(history("one"), "L10."); n != 1 {
		t.Fatalf("after %d attaches in one pane its history holds %d copies of the session's scrolled-off lines, want 1:\n%s", attaches, n, history("one"))
	}
	tm.run("new-session", "-d", "-s", "two", "-x", "80", "-y", "24", attach+"; echo RCX; sleep 60")
	termtest.WaitFor(t, "the other pane to be drawn", 20*time.Second, func() bool { return strings.Contains(history("two"), "ready") })
	if n := strings.Count(history("two"), "L10."); n != 1 {
		t.Fatalf("another pane's history holds %d copies of the session's scrolled-off lines, want 1:\n%s", n, history("two"))
	}
	corkCmd("kill", "--connect", a.url, "h")
}
