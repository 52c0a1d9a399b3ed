//go:build linux || darwin

package ttymodes

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestRoundTrip(t *testing.T) {
	var src unix.Termios
	src.Cc[unix.VERASE] = 0x08
	src.Cc[unix.VINTR] = 0x02
	src.Cc[unix.VEOF] = 0x06
	src.Iflag = unix.IUTF8 | unix.ICRNL
	src.Lflag = unix.ICANON | unix.ISIG
	src.Cflag = unix.CS7 | unix.PARENB
	m := Encode(&src)
	if m["VERASE"] != 8 || m["IUTF8"] != 1 || m["ECHO"] != 0 || m["CS7"] != 1 || m["CS8"] != 0 {
		t.Fatalf("encoded %v", m)
	}

	var dst unix.Termios
	dst.Lflag = unix.ECHO // on here, off in src: Apply must clear it
	dst.Cflag = unix.CS8 | unix.CREAD
	Apply(&dst, m)
	if dst.Cc[unix.VERASE] != 8 || dst.Cc[unix.VINTR] != 2 || dst.Cc[unix.VEOF] != 6 {
		t.Errorf("control characters %v", dst.Cc)
	}
	if dst.Iflag != src.Iflag || dst.Lflag != src.Lflag {
		t.Errorf("iflag %#x lflag %#x, want %#x %#x", dst.Iflag, dst.Lflag, src.Iflag, src.Lflag)
	}
	// CREAD is no RFC 4254 mode: it stays as the guest had it.
	if dst.Cflag != unix.CS7|unix.PARENB|unix.CREAD {
		t.Errorf("cflag %#x", dst.Cflag)
	}
}

// TestUnknownAndMissing: a mode this system lacks or does not know is
// ignored, and a mode not sent is left as it was.
func TestUnknownAndMissing(t *testing.T) {
	var dst unix.Termios
	dst.Lflag = unix.ECHO
	Apply(&dst, map[string]uint32{"NO_SUCH_MODE": 1, "VSTATUS_OR_NOT": 20, "IUTF8": 1})
	if dst.Lflag != unix.ECHO || dst.Iflag != unix.IUTF8 {
		t.Fatalf("lflag %#x iflag %#x", dst.Lflag, dst.Iflag)
	}
}
