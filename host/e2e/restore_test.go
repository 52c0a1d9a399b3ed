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

// Screen restore: a program in a kept session, detached and attached from
// another pane of the same size, must look as the same program run
// directly in a pane of that size does: text, colours, cursor and modes,
// read back from tmux (capture-pane -e, its pane flags).

// paneState is what tmux shows of a pane: its screen with attributes, the
// cursor, and the modes it tracks for the program.
func paneState(tm tmux, pane string) (screen, flags string) {
	screen = tm.run("capture-pane", "-p", "-e", "-t", pane)
	flags = strings.TrimSpace(tm.run("display-message", "-p", "-t", pane,
		"cursor=#{cursor_x},#{cursor_y} visible=#{cursor_flag} alt=#{alternate_on} mouse=#{mouse_standard_flag}#{mouse_button_flag}#{mouse_any_flag}#{mouse_sgr_flag} keys=#{keypad_cursor_flag}#{keypad_flag}"))
	return screen, flags
}

func TestRestoreMatchesDirect(t *testing.T) {
	needTools(t, "tmux", "less", "vim")
	dir := t.TempDir()
	long := filepath.Join(dir, "long.txt")
	var text strings.Builder
	for i := 1; i <= 300; i++ {
		fmt.Fprintf(&text, "line %d: \x1b[3%dmsome coloured words\x1b[0m and plain ones\n", i, i%7+1)
	}
	os.WriteFile(long, []byte(text.String()), 0o644)
	modes := filepath.Join(dir, "modes.sh")
	os.WriteFile(modes, []byte("printf '\\033[?2004h\\033[?1000h\\033[?1006h\\033[?1h\\033=\\033[1;32mmodes on\\033[0m\\n'\nstty raw -echo\nexec od -An -c\n"), 0o755)

	for _, tc := range []struct {
		name   string
		argv   []string
		ready  string   // on the screen when the program is drawn
		keys   []string // typed into both before the detach
		whole  bool     // the whole screen must match (htop's changes by itself)
		checks []string // lines that must match when not whole
	}{
		{"shell at its prompt", []string{"sh"}, "#",
			[]string{"printf '\\033[1;31mbold red\\033[0m then \\033[4munderlined\\033[0m\\n'; seq 1 40; echo done", "Enter"}, true, nil},
		{"less on a long file", []string{"less", "-R", long}, "line 1:", []string{"5", "0", "j"}, true, nil},
		{"vim with a file open", []string{"vim", "-u", "NONE", "-n", long}, "line 1:", []string{"40G", "w", "w"}, true, nil},
		{"bracketed paste and mouse", []string{"sh", modes}, "modes on", nil, true, nil},
		{"htop", []string{"htop"}, "PID", nil, false, []string{"F1Help", "PID USER"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := exec.LookPath(tc.argv[0]); err != nil && tc.argv[0] == "htop" {
				t.Skip("htop is not installed (apt-get install htop)")
			}
			a := startAgent(t)
			tm := newTmux(t)
			quote := func(args []string) string { return "'" + strings.Join(args, "' '") + "'" }
			name := fmt.Sprintf("r%d", time.Now().UnixNano()%100000)
			tm.run("new-session", "-d", "-s", "direct", "-x", "80", "-y", "24", quote(tc.argv))
			tm.run("new-session", "-d", "-s", "kept", "-x", "80", "-y", "24",
				bin.Cork+" "+strings.Join(corkExec(a, "-it", "--keep", "--name", name, "--"), " ")+" "+quote(tc.argv)+"; sleep 60")
			for _, pane := range []string{"direct", "kept"} {
				termtest.WaitFor(t, tc.name+" drawn in "+pane, 20*time.Second, func() bool {
					s, _ := paneState(tm, pane)
					return strings.Contains(s, tc.ready)
				})
				for _, k := range tc.keys {
					tm.run("send-keys", "-t", pane, k)
				}
			}
			// Both have settled when their screens agree (htop: its
			// fixed lines).
			same := func(x, y string) bool {
				sx, fx := paneState(tm, x)
				sy, fy := paneState(tm, y)
				if !tc.whole {
					for _, c := range tc.checks {
						if lineWith(sx, c) == "" || lineWith(sx, c) != lineWith(sy, c) {
							return false
						}
					}
					return fx == fy
				}
				return sx == sy && fx == fy
			}
			termtest.WaitFor(t, "the kept pane to look like the direct one", 20*time.Second, func() bool { return same("direct", "kept") })

			tm.run("send-keys", "-t", "kept", "C-Space", "C-q")
			termtest.WaitFor(t, "cork to detach", 20*time.Second, func() bool {
				s, _ := paneState(tm, "kept")
				return strings.Contains(s, "detached from session")
			})
			tm.run("new-session", "-d", "-s", "attach", "-x", "80", "-y", "24", bin.Cork+" attach --connect "+a.url+" "+name+"; sleep 60")
			// The attach ends with the program's own repaint (the
			// terminal one column wider, then back); the direct one gets
			// the same, so that both have repainted (vim clears its
			// message line when it does).
			tm.run("resize-window", "-t", "direct", "-x", "81", "-y", "24")
			tm.run("resize-window", "-t", "direct", "-x", "80", "-y", "24")
			deadline := time.Now().Add(20 * time.Second)
			for !same("direct", "attach") {
				if time.Now().After(deadline) {
					sd, fd := paneState(tm, "direct")
					sa, fa := paneState(tm, "attach")
					t.Fatalf("after attach the pane shows\n%s\n%s\nwhere the program run directly shows\n%s\n%s", sa, fa, sd, fd)
				}
				time.Sleep(20 * time.Millisecond)
			}
			// Peek shows the same text, without attaching.
			if tc.whole {
				peek, code := corkCmd("peek", "--connect", a.url, name)
				direct := tm.run("capture-pane", "-p", "-t", "direct")
				if code != 0 || strings.TrimRight(peek, "\n") != strings.TrimRight(direct, "\n") {
					t.Errorf("cork peek:\n%s\nthe direct pane:\n%s", peek, direct)
				}
			}
			if tc.name == "bracketed paste and mouse" {
				// The restored modes are live: a paste into the attached
				// pane reaches the program bracketed.
				tm.run("set-buffer", "pasted")
				tm.run("paste-buffer", "-p", "-t", "attach")
				termtest.WaitFor(t, "the paste to arrive bracketed", 20*time.Second, func() bool {
					s, _ := paneState(tm, "attach")
					return strings.Contains(s, "033   [   2   0   0   ~   p   a   s")
				})
			}
		})
	}
}

// lineWith returns the first line of screen that holds s, colours dropped.
func lineWith(screen, s string) string {
	for _, l := range strings.Split(screen, "\n") {
		plain := stripSGR(l)
		if strings.Contains(plain, s) {
			return plain
		}
	}
	return ""
}

func stripSGR(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == 0x1b && i+1 < len(s) && s[i+1] == '[' {
			j := i + 2
			for j < len(s) && (s[j] < 0x40 || s[j] > 0x7e) {
				j++
			}
			i = j
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// TestWatchers: read-only clients see the screen and what follows, drawn
// for their own size (clipped when smaller, padded when larger); they send
// no input and never size the session; ls counts them.
func TestWatchers(t *testing.T) {
	a := startAgent(t)
	prog := `trap 'echo "size $(stty size)"' WINCH; printf '\033[3;50Hfar-right\033[1;1H'; echo start; ` +
		`while read line; do echo "got $line"; done`
	rw := termtest.Start(t, 24, 80, bin.Cork, corkExec(a, "-it", "--keep", "--name", "watched", "--", "sh", "-c", prog)...)
	rw.WaitLine(t, "start", func(l string) bool { return strings.Contains(l, "start") })

	big := termtest.Start(t, 40, 120, bin.Cork, "attach", "--read-only", "--connect", a.url, "watched")
	small := termtest.Start(t, 10, 40, bin.Cork, "attach", "--read-only", "--connect", a.url, "watched")
	for _, w := range []*termtest.Terminal{big, small} {
		termtest.WaitFor(t, "the watcher to get the screen", 10*time.Second, func() bool { return strings.Contains(w.Out.String(), "start") })
	}
	termtest.WaitFor(t, "ls to count the watchers", 10*time.Second, func() bool {
		s, ok := a.session(t, "watched")
		return ok && s.Watchers == 2 && s.Attached
	})
	if out, _ := corkCmd("ls", "--connect", a.url); !strings.Contains(out, "running, attached, 2 watching") {
		t.Fatalf("cork ls:\n%s", out)
	}
	// Live output reaches the watchers.
	rw.Write(t, "hello\r")
	for _, w := range []*termtest.Terminal{big, small} {
		termtest.WaitFor(t, "the watcher to see new output", 10*time.Second, func() bool { return strings.Contains(w.Out.String(), "got hello") })
	}
	// The big one sees the far-right text; the small one is clipped at 40
	// columns and 10 rows.
	if !strings.Contains(big.Out.String(), "far-right") || strings.Contains(small.Out.String(), "far-right") {
		t.Fatalf("clipping: big sees far-right %v, small %v", strings.Contains(big.Out.String(), "far-right"), strings.Contains(small.Out.String(), "far-right"))
	}
	if strings.Contains(small.Out.String(), "\x1b[11;1H") {
		t.Fatal("the 10-row watcher was drawn an 11th row")
	}
	// Watchers type nothing into the session and never size it.
	big.Write(t, "from-watcher\r")
	big.SetSize(t, 50, 150)
	small.SetSize(t, 12, 30)
	rw.Write(t, "after\r")
	rw.WaitLine(t, "the program's next line", func(l string) bool { return strings.Contains(l, "got after") })
	if strings.Contains(rw.Out.String(), "from-watcher") || strings.Contains(rw.Out.String(), "size ") {
		t.Fatalf("a watcher reached the session: %q", rw.Out.String())
	}
	if s, _ := a.session(t, "watched"); s.Size.String() != "80x24" {
		t.Fatalf("the session's size is %s after watchers resized", s.Size)
	}
	// A watcher ends with the session, with its status.
	corkCmd("kill", "--signal", "KILL", "--connect", a.url, "watched")
	for _, w := range []*termtest.Terminal{big, small, rw} {
		if code := w.Wait(t); code != 137 {
			t.Fatalf("a client exited %d after the session was killed, want 137", code)
		}
	}
}
