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

// TestDetachMessageBelowDrawing: the detach message goes on a line of its
// own below everything the program drew, read back from a real tmux pane.
// A program that draws on the main screen and leaves the cursor in the
// middle of its drawing (the claude TUI's prompt box) keeps every line it
// drew; a program on the alternate screen gives the shell's screen back,
// with the message under the shell's last line, as tmux's own detach.
func TestDetachMessageBelowDrawing(t *testing.T) {
	needTools(t, "tmux")
	for _, tt := range []struct {
		name, draw string
		want       []string // the pane's lines, in order, from the first
	}{
		{"main screen, cursor up", `top\nrule-1\nprompt> \nrule-2\nstatus line\033[3A\033[9G`,
			[]string{"before-cork", "top", "rule-1", "prompt>", "rule-2", "status line", "cork: detached from session", "CORK_RC=0"}},
		{"alternate screen", `\033[?1049h\033[H\033[2Jfull screen\033[10;10Hcursor`,
			[]string{"before-cork", "cork: detached from session", "CORK_RC=0"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := startAgent(t)
			tm := newTmux(t)
			dir := t.TempDir()
			draw, wrapper := filepath.Join(dir, "draw.sh"), filepath.Join(dir, "run.sh")
			os.WriteFile(draw, []byte(fmt.Sprintf("printf '%s'\nsleep 60\n", tt.draw)), 0o755)
			name := fmt.Sprintf("d%d", time.Now().UnixNano()%100000)
			cork := strings.Join(append([]string{bin.Cork}, corkExec(a, "-it", "--keep", "--name", name, "--", "sh", draw)...), " ")
			os.WriteFile(wrapper, []byte("echo before-cork\n"+cork+"\necho CORK_RC=$?\nsleep 60\n"), 0o755)
			tm.run("new-session", "-d", "-s", "det", "-x", "80", "-y", "24", "sh "+wrapper)
			screen := func() string { return tm.run("capture-pane", "-p", "-J", "-S", "-", "-t", "det") }
			ready := "status line"
			if tt.name == "alternate screen" {
				ready = "cursor"
			}
			termtest.WaitFor(t, "the program to draw", 20*time.Second, func() bool { return strings.Contains(screen(), ready) })
			tm.run("send-keys", "-t", "det", "C-Space", "C-q")
			termtest.WaitFor(t, "cork's exit status", 20*time.Second, func() bool { return strings.Contains(screen(), "CORK_RC=") })
			var lines []string
			for _, l := range strings.Split(screen(), "\n") {
				if l = strings.TrimSpace(l); l != "" {
					lines = append(lines, l)
				}
			}
			if len(lines) != len(tt.want) {
				t.Fatalf("pane lines %q, want lines starting %q", lines, tt.want)
			}
			for i, w := range tt.want {
				if !strings.HasPrefix(lines[i], w) {
					t.Fatalf("pane lines %q, want lines starting %q", lines, tt.want)
				}
			}
		})
	}
}
