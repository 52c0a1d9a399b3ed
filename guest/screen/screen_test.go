package screen

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/charmbracelet/x/vt"
)

// replay puts a Render on a fresh emulator, as a client's terminal would
// show it, and returns that terminal's lines and cursor.
func replay(t *testing.T, render []byte, cols, rows int) ([]string, int, int) {
	t.Helper()
	e := vt.NewEmulator(cols, rows)
	go drain(e, nil)
	defer closeEmulator(e)
	e.Write(render)
	var lines []string
	for y := range rows {
		var b strings.Builder
		for x := range cols {
			if c := e.CellAt(x, y); c != nil && !c.IsZero() {
				b.WriteString(c.String())
			}
		}
		lines = append(lines, strings.TrimRight(b.String(), " "))
	}
	p := e.CursorPosition()
	return lines, p.X, p.Y
}

func TestRenderRestoresScreenCursorAndModes(t *testing.T) {
	s := New(40, 10, 100, nil)
	defer s.Close()
	s.Write([]byte("first line\r\n\x1b[31mred\x1b[0m and \x1b[1mbold\x1b[0m\r\n"))
	s.Write([]byte("\x1b[5;7Hmiddle\x1b[?2004h\x1b[?1000h\x1b[?1006h\x1b[?1h\x1b="))
	render := s.Render(40, 10)
	lines, cx, cy := replay(t, render, 40, 10)
	want := s.Lines(false)
	for i := range want {
		if lines[i] != strings.TrimRight(want[i], " ") {
			t.Errorf("row %d on the client: %q, on the screen: %q", i, lines[i], want[i])
		}
	}
	if lines[0] != "first line" || lines[1] != "red and bold" || lines[4] != "      middle" {
		t.Errorf("restored %q", lines)
	}
	if cx != 12 || cy != 4 {
		t.Errorf("cursor at %d,%d, want 12,4", cx, cy)
	}
	for _, seq := range []string{"\x1b[31m", "\x1b[1m", "\x1b[?2004h", "\x1b[?1000h", "\x1b[?1006h", "\x1b[?1h", "\x1b=", "\x1b[?25h"} {
		if !bytes.Contains(render, []byte(seq)) {
			t.Errorf("render lacks %q", seq)
		}
	}
	if bytes.Contains(render, []byte("\x1b[?1049h")) {
		t.Error("render enters the alternate screen for a program on the main screen")
	}
}

func TestRenderAltScreenAndHiddenCursor(t *testing.T) {
	s := New(30, 8, 100, nil)
	defer s.Close()
	s.Write([]byte("shell output\r\n\x1b[?1049h\x1b[?25l\x1b[3;3Htui"))
	if !s.AltScreen() {
		t.Fatal("the alternate screen was not noticed")
	}
	render := s.Render(30, 8)
	if !bytes.HasPrefix(render, []byte("\x1b[0m\x1b[?1049h")) || !bytes.Contains(render, []byte("\x1b[?25l")) {
		t.Fatalf("render %q", render)
	}
	lines, _, _ := replay(t, render, 30, 8)
	if lines[2] != "  tui" || strings.Contains(strings.Join(lines, "\n"), "shell output") {
		t.Fatalf("alternate screen restored as %q", lines)
	}
	// Leaving it brings the main screen back.
	s.Write([]byte("\x1b[?1049l\x1b[?25h"))
	if s.AltScreen() || !strings.Contains(strings.Join(s.Lines(false), "\n"), "shell output") {
		t.Fatalf("after leaving: alt %v, %q", s.AltScreen(), s.Lines(false))
	}
}

// TestRenderClipsToASmallerTerminal: the rows with the cursor are shown.
func TestRenderClipsToASmallerTerminal(t *testing.T) {
	s := New(20, 10, 0, nil)
	defer s.Close()
	for i := range 10 {
		fmt.Fprintf(writerFunc(s.Write), "row %d\r\n", i)
	}
	s.Write([]byte("prompt$ "))
	lines, cx, cy := replay(t, s.Render(10, 4), 10, 4)
	if lines[3] != "prompt$" || lines[2] != "row 9" || cx != 8 || cy != 3 {
		t.Fatalf("clipped to %q, cursor %d,%d", lines, cx, cy)
	}
}

type writerFunc func([]byte)

func (f writerFunc) Write(p []byte) (int, error) { f(p); return len(p), nil }

// TestCatchUpScrollingOutput: a large backlog of scrolling text ends at the
// same screen as when fed whole.
func TestCatchUpScrollingOutput(t *testing.T) {
	var backlog bytes.Buffer
	for i := range 20000 {
		fmt.Fprintf(&backlog, "line %d of the build log\r\n", i)
	}
	backlog.WriteString("\x1b[?2004hdone$ ")
	whole := New(60, 20, 0, nil)
	defer whole.Close()
	whole.Write(backlog.Bytes())
	caught := New(60, 20, 0, nil)
	defer caught.Close()
	start := time.Now()
	caught.CatchUp(backlog.Bytes(), false)
	took := time.Since(start)
	if a, b := strings.Join(caught.Lines(false), "\n"), strings.Join(whole.Lines(false), "\n"); a != b {
		t.Fatalf("caught up to\n%s\nfed whole\n%s", a, b)
	}
	if !caught.scan.modes.bracketedPaste {
		t.Fatal("a mode set in the skipped part was lost")
	}
	t.Logf("%d bytes caught up in %v", backlog.Len(), took)
}

// TestHostileOutput: sequences that take x/vt seconds or minutes as they
// come (huge repeat counts, tabs, erasures, endless parameters,
// unterminated strings) go through within a time bound.
func TestHostileOutput(t *testing.T) {
	cases := map[string]string{
		"repeat":             "x\x1b[1000000000b",
		"tab forward":        "\x1b[1000000000I",
		"tab back":           "\x1b[1000000000Z",
		"erase chars":        "\x1b[1000000000X",
		"scroll region":      "\x1b[1;1000000000r\x1b[1000000000S",
		"insert lines":       "\x1b[1000000000L",
		"cursor far away":    "\x1b[1000000000;1000000000H",
		"endless parameters": "\x1b[" + strings.Repeat("1;", 1<<20) + "m",
		"unterminated OSC":   "\x1b]0;" + strings.Repeat("a", 8<<20),
		"unterminated DCS":   "\x1bP" + strings.Repeat("a", 8<<20),
		"queries":            strings.Repeat("\x1b[c\x1b[6n\x1b[>c", 10000),
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			s := New(200, 50, 100, func([]byte) {})
			defer s.Close()
			done := make(chan struct{})
			go func() {
				s.CatchUp([]byte(c), false)
				s.Render(200, 50)
				close(done)
			}()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("still busy after 10 s")
			}
		})
	}
}

// TestRandomOutput: random bytes and random escape sequences, in random
// chunks, never panic and never stall.
func TestRandomOutput(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	pieces := []string{"\x1b[", "\x1b]", "\x1bP", "\x1b\\", "\x07", "\x1b", ";", "?", "1049", "h", "l", "m", "H", "J", "K",
		"999999999", "b", "\r\n", "é", "漢", "\x00", "\x9b", "38;2;1;2;3", "\x1b[?1049h", "\x1b[?1049l", "x"}
	s := New(80, 24, 50, func([]byte) {})
	defer s.Close()
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; i < 2000; i++ {
		var b bytes.Buffer
		for range rng.IntN(64) {
			if rng.IntN(4) == 0 {
				b.WriteByte(byte(rng.IntN(256)))
			} else {
				b.WriteString(pieces[rng.IntN(len(pieces))])
			}
		}
		s.CatchUp(b.Bytes(), false)
		if i%100 == 0 {
			s.Render(80, 24)
			s.Resize(40+rng.IntN(80), 10+rng.IntN(30))
		}
		if time.Now().After(deadline) {
			t.Fatalf("2000 random chunks took over 20 s (at %d)", i)
		}
	}
}

// TestQueriesAnswered: device attributes and cursor position reports reach
// the reply function, and do not block the screen.
func TestQueriesAnswered(t *testing.T) {
	replies := make(chan []byte, 16)
	s := New(80, 24, 0, func(p []byte) { replies <- p })
	defer s.Close()
	s.Write([]byte("\x1b[3;5H\x1b[6n"))
	select {
	case r := <-replies:
		if string(r) != "\x1b[3;5R" {
			t.Fatalf("cursor position report %q", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no answer to a cursor position query")
	}
}

func FuzzScreen(f *testing.F) {
	f.Add([]byte("\x1b[1;31mhi\x1b[0m\x1b[?1049h\x1b[5;5H"), uint8(80), uint8(24))
	f.Add([]byte("x\x1b[99999999999999999999b"), uint8(10), uint8(2))
	f.Fuzz(func(t *testing.T, p []byte, cols, rows uint8) {
		s := New(int(cols%200)+1, int(rows%60)+1, 10, func([]byte) {})
		defer s.Close()
		start := time.Now()
		s.CatchUp(p, false)
		s.Render(int(rows%50)+1, int(cols%100)+1)
		s.Lines(true)
		// A smaller client and back: rows go into the scrollback and
		// come back, whatever the screen holds.
		s.Resize(int(rows%100)+1, int(cols%40)+1)
		s.Resize(int(cols%200)+1, int(rows%60)+1)
		s.Render(int(cols%200)+1, int(rows%60)+1)
		// The bound is generous for the race detector and a loaded
		// machine; what it catches is seconds per kilobyte.
		if d := time.Since(start); d > 2*time.Second+time.Duration(len(p))*time.Millisecond {
			t.Fatalf("%d bytes took %v", len(p), d)
		}
	})
}
