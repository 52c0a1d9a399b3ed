//go:build linux

package e2e

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/corkvm/cork/host/e2e/termtest"
)

// TestTerminalModesReachGuest: the operator's terminal modes (erase, intr,
// eof, IUTF8, echo), set away from the kernel's defaults, are the guest
// PTY's before the program starts, as ssh's pty-req carries them.
func TestTerminalModesReachGuest(t *testing.T) {
	a := startAgent(t)
	script := `stty -a | tr ';\n' '  '; echo; echo ready; IFS= read -r line; printf '%s' "$line" | od -An -tx1 | sed 's/^/read:/'`
	tm := termtest.StartWithModes(t, 24, 80, func(tio *unix.Termios) {
		tio.Cc[unix.VERASE] = 0x08 // ^H, where the kernel's default is ^?
		tio.Cc[unix.VINTR] = 0x02  // ^B
		tio.Cc[unix.VEOF] = 0x06   // ^F
		tio.Iflag |= unix.IUTF8    // off by default on a new PTY
		tio.Lflag &^= unix.ECHO
	}, bin.Cork, corkExec(a, "-it", "--", "sh", "-c", script)...)
	tm.WaitLine(t, "the program to be ready", func(l string) bool { return l == "ready" })
	stty := tm.Out.String()
	for _, want := range []string{"intr = ^B", "erase = ^H", "eof = ^F", " iutf8", " -echo "} {
		if !strings.Contains(stty, want) {
			t.Errorf("guest stty -a lacks %q:\n%s", want, stty)
		}
	}
	// Typing "aé", the operator's Backspace (^H), "b": with IUTF8 and the
	// operator's erase character the line reads "ab", as it does directly.
	tm.Write(t, "a\u00e9\x08b\r")
	line := tm.WaitLine(t, "the line read", func(l string) bool { return strings.HasPrefix(l, "read:") })
	if got := strings.Join(strings.Fields(strings.TrimPrefix(line, "read:")), " "); got != "61 62" {
		t.Fatalf("the guest read bytes %q, want 61 62 (\"ab\")", got)
	}
	if code := tm.Wait(t); code != 0 {
		t.Fatalf("cork exited %d", code)
	}
}
