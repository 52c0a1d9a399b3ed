//go:build linux

package term

import (
	"testing"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// TestRawAgainAfterStop: a continue makes the terminal raw again whatever
// the shell set while cork was stopped, but never after the session is
// over: a late SIGCONT must not leave the operator's terminal raw.
func TestRawAgainAfterStop(t *testing.T) {
	master, slave, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	defer slave.Close()
	fd := int(slave.Fd())
	lflag := func() uint32 {
		tio, err := unix.IoctlGetTermios(fd, unix.TCGETS)
		if err != nil {
			t.Fatal(err)
		}
		return tio.Lflag & (unix.ICANON | unix.ECHO)
	}
	cooked := lflag()
	r, err := EnterRaw(fd)
	if err != nil {
		t.Fatal(err)
	}
	r.pause() // SIGTSTP
	if lflag() != cooked {
		t.Fatal("a stop left the terminal raw")
	}
	if !r.again() || lflag() != 0 {
		t.Fatalf("a continue did not make the terminal raw again (lflag %#x)", lflag())
	}
	r.Restore()
	if r.again() || lflag() != cooked {
		t.Fatalf("a continue after the session made the terminal raw (lflag %#x)", lflag())
	}
}
