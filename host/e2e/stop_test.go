//go:build linux

package e2e

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corkvm/cork/host/e2e/termtest"
)

// A cork that is stopped and continued (kill -STOP, or kill -TSTP, then a
// shell's fg) puts its terminal back in raw mode and has the program
// repaint, as vim and tmux do; stopped by SIGTSTP it gives the terminal
// back to the shell in the operator's modes first.

// stopped reports whether process pid is stopped, from /proc.
func stopped(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command's closing parenthesis.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'T'
}

func raw(tio *unix.Termios) bool { return tio.Lflag&(unix.ICANON|unix.ECHO|unix.ISIG) == 0 }
func cooked(tio *unix.Termios) bool {
	return tio.Lflag&(unix.ICANON|unix.ECHO|unix.ISIG) == unix.ICANON|unix.ECHO|unix.ISIG
}

func TestStopContinue(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGSTOP, syscall.SIGTSTP} {
		t.Run(unix.SignalName(sig), func(t *testing.T) {
			a := startAgent(t)
			name := "stop" + strings.ToLower(unix.SignalName(sig))
			tm := termtest.Start(t, 24, 80, bin.Cork, corkExec(a, "-it", "--keep", "--name", name, "--", bin.Probe)...)
			tm.WaitLine(t, "the probe to start", func(l string) bool { return strings.HasPrefix(l, "start 24 80 ") })
			if !raw(termios(t, tm.Master)) {
				t.Fatal("the terminal is not raw while the session runs")
			}
			syscall.Kill(tm.Pid(), sig)
			termtest.WaitFor(t, "cork to stop", 10*time.Second, func() bool { return stopped(tm.Pid()) })
			if sig == syscall.SIGTSTP {
				if tio := termios(t, tm.Master); !cooked(tio) {
					t.Fatalf("stopped by SIGTSTP, cork left the terminal raw (lflag %#x)", tio.Lflag)
				}
			} else {
				// A job control shell puts its own modes back.
				if err := unix.IoctlSetTermios(int(tm.Master.Fd()), unix.TCSETS, tm.Initial); err != nil {
					t.Fatal(err)
				}
			}
			before := len(termtest.ProbeReports(tm.Out.String(), "winch"))
			syscall.Kill(tm.Pid(), syscall.SIGCONT)
			termtest.WaitFor(t, "the terminal to be raw again", 10*time.Second, func() bool { return raw(termios(t, tm.Master)) })
			// The program repaints: a SIGWINCH that ends at the
			// terminal's own size.
			termtest.WaitFor(t, "the program to be made to repaint", 10*time.Second, func() bool {
				w := termtest.ProbeReports(tm.Out.String(), "winch")
				return len(w) > before && w[len(w)-1] == "24 80"
			})
			tm.Write(t, "\x00\x11")
			if code := tm.Wait(t); code != 0 || !strings.Contains(tm.Out.String(), "detached from session "+name) {
				t.Fatalf("the detach keys after the stop: exit %d, %q", code, tm.Out.String())
			}
			if !cooked(termios(t, tm.Master)) {
				t.Fatal("the terminal is left raw after the detach")
			}
		})
	}
}
