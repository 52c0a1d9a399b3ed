//go:build linux

package e2e

import (
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corkvm/cork/host/e2e/termtest"
)

// tmux drives a private tmux server, as a person dragging panes does.
type tmux struct {
	t      *testing.T
	socket string
}

// newTmux names a private tmux server for the test, killed when the test
// ends; the first run starts it.
func newTmux(t *testing.T) tmux {
	tm := tmux{t: t, socket: fmt.Sprintf("cork-test-%d", time.Now().UnixNano())}
	t.Cleanup(func() { exec.Command("tmux", "-L", tm.socket, "kill-server").Run() })
	return tm
}

func (tm tmux) run(args ...string) string {
	tm.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-L", tm.socket}, args...)...).CombinedOutput()
	if err != nil {
		tm.t.Fatalf("tmux %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// TestTmuxDragEndsAtPaneSize resizes a real tmux window 100 times in one
// burst while cork runs the probe in it: the program must end at the size
// of the pane it is drawn in.
func TestTmuxDragEndsAtPaneSize(t *testing.T) {
	needTools(t, "tmux")
	a := startAgent(t)
	tm := newTmux(t)
	cmd := strings.Join(append([]string{bin.Cork}, corkExec(a, "-it", "--", bin.Probe)...), " ")
	tm.run("new-session", "-d", "-s", "drag", "-x", "80", "-y", "24", cmd)

	screen := func() string { return tm.run("capture-pane", "-p", "-J", "-S", "-", "-t", "drag") }
	termtest.WaitFor(t, "the probe to start", 20*time.Second, func() bool { return strings.Contains(screen(), "start ") })

	// 100 resizes, each its own tmux command and applied by the server
	// before the next arrives: a drag faster than any hand's.
	rng := mrand.New(mrand.NewPCG(3, 4))
	for i := 0; i < 100; i++ {
		tm.run("resize-window", "-t", "drag", "-x", fmt.Sprint(40+rng.IntN(160)), "-y", fmt.Sprint(10+rng.IntN(50)))
	}
	pane := strings.Fields(tm.run("display-message", "-p", "-t", "drag", "#{pane_height} #{pane_width}"))
	want := pane[0] + " " + pane[1]

	termtest.WaitFor(t, "the probe to see the pane's size "+want, 20*time.Second, func() bool {
		w := termtest.ProbeReports(screen(), "winch")
		return len(w) > 0 && w[len(w)-1] == want
	})
	tm.run("send-keys", "-t", "drag", "?", "Enter")
	termtest.WaitFor(t, "the probe's answer", 20*time.Second, func() bool { return len(termtest.ProbeReports(screen(), "size")) > 0 })
	if got := termtest.ProbeReports(screen(), "size"); got[len(got)-1] != want {
		t.Fatalf("after the drag the program sees %s, the pane is %s", got[len(got)-1], want)
	}
	t.Logf("pane %s after 100 resizes", want)
}

// TestLostAgentLeavesTerminalUsable: corkd dies under a full-screen program
// that turned on the alternate screen, mouse reporting, application keys
// and a hidden cursor, and under a program that left the cursor mid-line.
// cork must leave the pane as the program's own exit would, and print its
// message at the start of a line.
func TestLostAgentLeavesTerminalUsable(t *testing.T) {
	needTools(t, "tmux")
	for _, tt := range []struct {
		name, draw string
	}{
		{"full-screen", `\033[?1049h\033[?25l\033[?1000h\033[?1006h\033[?1h\033=\033[5;5Hdrawing`},
		{"mid-line", `drawing`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := startAgent(t)
			tm := newTmux(t)
			dir := t.TempDir()
			draw, wrapper := filepath.Join(dir, "draw.sh"), filepath.Join(dir, "run.sh")
			os.WriteFile(draw, []byte(fmt.Sprintf("printf '%s'\nsleep 60\n", tt.draw)), 0o755)
			cork := strings.Join(append([]string{bin.Cork}, corkExec(a, "-it", "--", "sh", draw)...), " ")
			os.WriteFile(wrapper, []byte(cork+"\necho CORK_RC=$?\nsleep 60\n"), 0o755)
			tm.run("new-session", "-d", "-s", "lost", "-x", "80", "-y", "24", "sh "+wrapper)
			screen := func() string { return tm.run("capture-pane", "-p", "-t", "lost") }
			termtest.WaitFor(t, "the program to draw", 20*time.Second, func() bool { return strings.Contains(screen(), "drawing") })

			a.cmd.Process.Kill()
			termtest.WaitFor(t, "cork's exit status", 20*time.Second, func() bool { return strings.Contains(screen(), "CORK_RC=255") })
			lines := strings.Split(screen(), "\n")
			var msg, rc bool
			for _, l := range lines {
				msg = msg || strings.HasPrefix(l, "cork: connection to corkd lost")
				rc = rc || strings.HasPrefix(l, "CORK_RC=255")
			}
			if !msg || !rc {
				t.Errorf("cork's message and the status must start lines of their own:\n%s", screen())
			}
			flags := tm.run("display-message", "-p", "-t", "lost",
				"alternate=#{alternate_on} cursor=#{cursor_flag} mouse=#{mouse_any_flag}#{mouse_standard_flag}#{mouse_sgr_flag} keypad=#{keypad_cursor_flag}#{keypad_flag}")
			if want := "alternate=0 cursor=1 mouse=000 keypad=00"; strings.TrimSpace(flags) != want {
				t.Errorf("pane modes after the agent was lost: %s, want %s", strings.TrimSpace(flags), want)
			}
		})
	}
}

// TestKeptVimRedrawsOnAttach: vim in a kept session, detached with the
// keys and attached from a larger pane: vim repaints itself at the new
// size (no screen restore is needed for a program that redraws on
// SIGWINCH).
func TestKeptVimRedrawsOnAttach(t *testing.T) {
	needTools(t, "tmux", "vim")
	a := startAgent(t)
	file := filepath.Join(t.TempDir(), "lines.txt")
	var text strings.Builder
	for i := 1; i <= 60; i++ {
		fmt.Fprintf(&text, "line-%d\n", i)
	}
	os.WriteFile(file, []byte(text.String()), 0o644)
	tm := newTmux(t)
	cork := strings.Join(append([]string{bin.Cork}, corkExec(a, "-it", "--keep", "--name", "vimk", "--", "vim", "-u", "NONE", "-n", file)...), " ")
	tm.run("new-session", "-d", "-s", "one", "-x", "80", "-y", "20", cork+"; sleep 60")
	screen := func(s string) string { return tm.run("capture-pane", "-p", "-t", s) }
	termtest.WaitFor(t, "vim to show the file", 20*time.Second, func() bool { return strings.Contains(screen("one"), "line-19") })
	tm.run("send-keys", "-t", "one", "C-Space", "C-q")
	termtest.WaitFor(t, "cork to detach", 20*time.Second, func() bool { return strings.Contains(screen("one"), "detached from session vimk") })

	attach := strings.Join([]string{bin.Cork, "attach", "--connect", a.url, "vimk"}, " ")
	tm.run("new-session", "-d", "-s", "two", "-x", "120", "-y", "40", attach+"; echo CORK_RC=$?; sleep 60")
	// At 40 rows vim shows lines it could not at 20.
	termtest.WaitFor(t, "vim to repaint at the new size", 20*time.Second, func() bool {
		s := screen("two")
		return strings.Contains(s, "line-1\n") && strings.Contains(s, "line-39")
	})
	tm.run("send-keys", "-t", "two", ":q!", "Enter")
	termtest.WaitFor(t, "cork attach to end with vim", 20*time.Second, func() bool { return strings.Contains(screen("two"), "CORK_RC=0") })
}
