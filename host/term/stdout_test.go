package term

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

func TestStdoutFreshLine(t *testing.T) {
	for _, tt := range []struct{ wrote, want string }{
		{"", ""},                      // nothing on the screen: nothing to end
		{"prompt$ ", "\r\n"},          // mid-line
		{"done\r\n", ""},              // at the start of a line already
		{"\x1b[?1049h\x1b[H", "\r\n"}, // a full-screen program's last bytes
	} {
		var b bytes.Buffer
		s := NewStdout(&b)
		s.Write([]byte(tt.wrote))
		s.FreshLine()
		s.FreshLine() // a second call adds nothing
		if got := strings.TrimPrefix(b.String(), tt.wrote); got != tt.want {
			t.Errorf("after %q: FreshLine wrote %q, want %q", tt.wrote, got, tt.want)
		}
	}
}

func TestStdoutReset(t *testing.T) {
	var b bytes.Buffer
	s := NewStdout(&b)
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

// TestStdoutLeave: cork's message goes on a line of its own below
// everything the program drew: where the shell's screen left the cursor
// after an alternate screen program, below the last row after a program
// that drew on the main screen with the cursor moved about (the claude
// TUI), after the last line of a program that only wrote lines.
func TestStdoutLeave(t *testing.T) {
	for _, tt := range []struct {
		name   string
		writes []string
		want   string // what Leave writes after resetModes
	}{
		{"lines", []string{"one\r\ntwo"}, "\r\n"},
		{"lines ended", []string{"one\r\n"}, ""},
		{"alternate screen", []string{"\x1b[?1049h\x1b[5;5Hdrawing"}, ""},
		{"alternate screen, split", []string{"\x1b[?10", "49h\x1b[H", "x"}, ""},
		{"main screen, cursor moved up", []string{"a\r\nb\r\nc\r\n\x1b[2A> "}, belowAll},
		{"main screen, cursor placed, split", []string{"text\x1b[", "3;1", "Hx"}, belowAll},
		{"main screen after the alternate one", []string{"\x1b[1;1Hui\x1b[?1049h\x1b[Hfull\x1b[?1049l"}, belowAll},
		{"moves on the alternate screen only", []string{"$ \x1b[?1049h\x1b[H\x1b[2Jfull\x1b[?1049l"}, "\r\n"},
		{"a restore drawn on the main screen", []string{"\x1b[0m\x1b[H\x1b[2Jprompt$ "}, belowAll},
		{"reverse index", []string{"a\x1bM"}, belowAll},
		{"other sequences", []string{"\x1b[31mred\x1b[0m\x1b[?2004h\x1b]0;t\x07"}, "\r\n"},
	} {
		var b bytes.Buffer
		s := NewStdout(&b)
		for _, w := range tt.writes {
			s.Write([]byte(w))
		}
		before := b.Len()
		s.Leave()
		got, ok := strings.CutPrefix(b.String()[before:], resetModes)
		if !ok || got != tt.want {
			t.Errorf("%s: Leave wrote %q, want resetModes then %q", tt.name, b.String()[before:], tt.want)
		}
	}
	var b bytes.Buffer
	NewStdout(&b).Leave()
	if b.Len() != 0 {
		t.Errorf("Leave of an untouched screen wrote %q", b.String())
	}
}

// TestStdoutTrackBounded: a sequence longer than any tracked one, cut
// across writes, is not kept.
func TestStdoutTrackBounded(t *testing.T) {
	s := NewStdout(io.Discard)
	s.Write([]byte("\x1b[?" + strings.Repeat("1", 100)))
	if len(s.partial) != 0 {
		t.Fatalf("kept %d bytes of a sequence", len(s.partial))
	}
	for range 100 {
		s.Write([]byte("1"))
	}
	if len(s.partial) > maxSeq {
		t.Fatalf("kept %d bytes", len(s.partial))
	}
}

func BenchmarkStdoutWrite(b *testing.B) {
	line := []byte("\x1b[32mok\x1b[0m  some words of a build log, and a path/to/a/file.go:123\r\n")
	p := bytes.Repeat(line, 32<<10/len(line))
	s := NewStdout(io.Discard)
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		s.Write(p)
	}
}

// TestStdoutTitleGuard: the host's titles are pushed before the first
// write that may set a title (an OSC, or an ESC that may begin one), never
// in the middle of the sequence, and popped once at the end; a program that
// sets no title gets neither.
func TestStdoutTitleGuard(t *testing.T) {
	for _, tt := range []struct {
		name   string
		writes []string
		want   string
	}{
		{"no title", []string{"plain", "\x1b[31mred\x1b[0m"}, "plain\x1b[31mred\x1b[0m"},
		{"a title", []string{"a", "b\x1b]2;t\x07c", "\x1b]0;u\x07"},
			"a" + saveTitle + "b\x1b]2;t\x07c\x1b]0;u\x07" + restoreTitle},
		{"an OSC cut after its ESC", []string{"a\x1b", "]2;t\x07"},
			saveTitle + "a\x1b]2;t\x07" + restoreTitle},
	} {
		var b bytes.Buffer
		s := NewStdout(&b)
		s.GuardTitle()
		for _, w := range tt.writes {
			s.Write([]byte(w))
		}
		s.RestoreTitle()
		s.RestoreTitle() // pops once
		if b.String() != tt.want {
			t.Errorf("%s: wrote %q, want %q", tt.name, b.String(), tt.want)
		}
	}
	var b bytes.Buffer
	s := NewStdout(&b)
	s.Write([]byte("\x1b]2;t\x07"))
	s.RestoreTitle()
	if b.String() != "\x1b]2;t\x07" {
		t.Errorf("without GuardTitle: wrote %q", b.String())
	}
}
