package term

import (
	"bytes"
	"strings"
	"testing"
)

func TestScreenFreshLine(t *testing.T) {
	for _, tt := range []struct{ wrote, want string }{
		{"", ""},                      // nothing on the screen: nothing to end
		{"prompt$ ", "\r\n"},          // mid-line
		{"done\r\n", ""},              // at the start of a line already
		{"\x1b[?1049h\x1b[H", "\r\n"}, // a full-screen program's last bytes
	} {
		var b bytes.Buffer
		s := NewScreen(&b)
		s.Write([]byte(tt.wrote))
		s.FreshLine()
		s.FreshLine() // a second call adds nothing
		if got := strings.TrimPrefix(b.String(), tt.wrote); got != tt.want {
			t.Errorf("after %q: FreshLine wrote %q, want %q", tt.wrote, got, tt.want)
		}
	}
}

func TestScreenReset(t *testing.T) {
	var b bytes.Buffer
	s := NewScreen(&b)
	s.Reset()
	if b.Len() != 0 {
		t.Fatalf("Reset of an untouched screen wrote %q", b.String())
	}
	s.Write([]byte("x"))
	s.Reset()
	out := b.String()
	for _, want := range []string{"\x1b[?1049l", "\x1b[?25h", "\x1b[?2004l", "\x1b[?1000l", "\x1b[?1006l", "\x1b[?1004l", "\x1b[?1l"} {
		if !strings.Contains(out, want) {
			t.Errorf("Reset wrote %q, lacking %q", out, want)
		}
	}
	if !strings.HasSuffix(out, "\x1b[?1049l") {
		t.Errorf("Reset must leave the alternate screen last (it restores the cursor): %q", out)
	}
}
