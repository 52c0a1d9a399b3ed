package screen

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unsafe"

	"github.com/charmbracelet/x/vt"
)

// TestSizeBounded: a peer's size (a Resize, an Exec's) is the PTY's, but the
// emulator keeps at most MaxCols x MaxRows and MaxCells. One resize to
// 65535x65535 took corkd from 8 MB to 588 MB.
func TestSizeBounded(t *testing.T) {
	for _, size := range [][2]int{{MaxCols + 1, 10}, {10, MaxRows + 1}, {MaxCols, MaxRows}, {65535, 65535}} {
		s := New(size[0], size[1], 100, nil)
		cols, rows := s.Size()
		s.Resize(size[1], size[0])
		c2, r2 := s.Size()
		s.Close()
		for _, got := range [][2]int{{cols, rows}, {c2, r2}} {
			if got[0] > MaxCols || got[1] > MaxRows || got[0]*got[1] > MaxCells {
				t.Errorf("asked %v: the screen is %dx%d", size, got[0], got[1])
			}
		}
	}
}

// TestClusterBounded: a megabyte of combining marks on one character made
// one cell (and every Restore of it) a megabyte.
func TestClusterBounded(t *testing.T) {
	s := New(80, 24, 100, nil)
	defer s.Close()
	s.CatchUp(append([]byte("e"), bytes.Repeat([]byte("\u0301"), 1<<19)...), false)
	if c := s.emu.CellAt(0, 0); c == nil || len(c.Content) > 1+maxCluster {
		t.Fatalf("the cell holds %d bytes", len(c.Content))
	}
	if n := len(s.Render(80, 24)); n > 64<<10 {
		t.Fatalf("the Restore is %d bytes", n)
	}
	// Clusters in use come through whole.
	family := "👩🏽\u200d❤️\u200d💋\u200d👨🏾"
	s.Write([]byte("\x1b[2;1H" + family + "x"))
	if c := s.emu.CellAt(0, 1); c == nil || c.Content != family {
		t.Fatalf("an emoji sequence became %q", c.Content)
	}
}

// TestStringsBounded: hyperlinks and overlong strings never reach the
// emulator, where each cell would keep its own.
func TestStringsBounded(t *testing.T) {
	s := New(80, 24, 100, nil)
	defer s.Close()
	s.Write([]byte("\x1b]8;;http://example.com/" + strings.Repeat("a", 1<<20) + "\x1b\\x\x1b]8;;\x1b\\"))
	if c := s.emu.CellAt(0, 0); c == nil || c.Link.URL != "" || c.Content != "x" {
		t.Fatalf("cell %+v", c)
	}
}

// TestAltScreenKeepsNoScrollback: x/vt's alternate screen keeps 10,000
// lines of scrollback of its own, which nothing shows.
func TestAltScreenKeepsNoScrollback(t *testing.T) {
	s := New(80, 24, 100, nil)
	defer s.Close()
	s.Write([]byte("\x1b[?1049h" + strings.Repeat("line\r\n", 1000)))
	f := reflect.ValueOf(s.emu).Elem().FieldByName("scrs")
	scrs := (*[2]vt.Screen)(unsafe.Pointer(f.UnsafeAddr()))
	if n := scrs[1].Scrollback().Len(); n != 0 {
		t.Fatalf("the alternate screen keeps %d lines", n)
	}
}

// TestMarginsPastTheScreen: x/vt indexed out of its screen (a panic, which
// would end corkd) on a bottom margin below the screen.
func TestMarginsPastTheScreen(t *testing.T) {
	s := New(80, 24, 100, nil)
	defer s.Close()
	s.Write([]byte("\x1b[2;200r\x1b[2H\x1bM\x1bMok"))
	s.Write([]byte("\x1b[?69h\x1b[2;500s\x1b[2H\x1bMok"))
	if !strings.Contains(strings.Join(s.Lines(false), "\n"), "ok") {
		t.Fatal("the screen stopped")
	}
}

// TestLinesFitAFrame: a peek's lines, as JSON, fit in a frame whatever the
// screen holds.
func TestLinesFitAFrame(t *testing.T) {
	s := New(MaxCells/MaxRows, MaxRows, 100, nil)
	defer s.Close()
	var b bytes.Buffer
	for i := range MaxCells {
		b.WriteString("\x1b[38;2;1;2;" + string(rune('0'+i%10)) + "m<\u0301\u0302\u0303")
	}
	s.CatchUp(b.Bytes(), false)
	for _, styled := range []bool{false, true} {
		j, _ := json.Marshal(s.Lines(styled))
		if len(j) > maxLinesSize {
			t.Fatalf("styled %v: %d bytes of JSON", styled, len(j))
		}
	}
}

// TestTitleRestored: an attach gets the program's window title back.
func TestTitleRestored(t *testing.T) {
	s := New(80, 24, 100, nil)
	defer s.Close()
	s.Write([]byte("\x1b]0;first\x07\x1b]2;vim: notes.txt\x1b\\text"))
	if r := s.Render(80, 24); !bytes.Contains(r, []byte("\x1b]2;vim: notes.txt\x1b\\")) {
		t.Fatalf("render %q", r)
	}
	s.Write([]byte("\x1b]0;a\x01\rb\x07")) // no controls get into a title
	if r := s.Render(80, 24); !bytes.Contains(r, []byte("\x1b]0;ab\x1b\\")) {
		t.Fatalf("render %q", r)
	}
}

// TestSmallerClientKeepsScreen: bash at 100x30 shows seq 1 45 (lines 17-45
// and the prompt); a client at 60x15 attaches and leaves. As in tmux, the
// screen shows 17-45 again, and the scrollback comes back at its own width.
func TestSmallerClientKeepsScreen(t *testing.T) {
	s := New(100, 30, 100, nil)
	defer s.Close()
	wide := strings.Repeat("w", 90)
	s.Write([]byte(wide + "\r\n$ seq 1 45\r\n"))
	for i := 1; i <= 45; i++ {
		s.Write([]byte(itoa(i) + "\r\n"))
	}
	s.Write([]byte("$ "))
	before := strings.Join(s.Lines(false), "|")
	s.Resize(60, 15)
	if got := strings.Join(s.Lines(false), "|"); !strings.HasPrefix(got, "32|") || !strings.HasSuffix(got, "45|$") {
		t.Errorf("at 60x15: %s", got)
	}
	if r := s.Render(100, 30); !bytes.Contains(r, []byte(wide)) {
		t.Errorf("the scrollback was cut to the narrow width: %q", r)
	}
	s.Resize(100, 30)
	if got := strings.Join(s.Lines(false), "|"); got != before {
		t.Errorf("back at 100x30:\n%s\nbefore:\n%s", got, before)
	}
	if col, row, _ := s.Cursor(); col != 2 || row != 29 {
		t.Errorf("cursor at %d,%d", col, row)
	}
	// On the alternate screen, as in tmux, the top rows go and do not come
	// back: the program repaints.
	s.Write([]byte("\x1b[?1049h\x1b[H"))
	for i := 1; i <= 29; i++ {
		s.Write([]byte(itoa(i) + "\r\n"))
	}
	s.Resize(60, 15)
	if got := strings.Join(s.Lines(false), "|"); !strings.HasPrefix(got, "16|") {
		t.Errorf("alternate screen at 60x15: %s", got)
	}
}

func itoa(n int) string { return string(appendInt(nil, n)) }

// TestGrowPullsAllTheScrollback: a grow that takes every line the
// scrollback has leaves none of them behind in it.
func TestGrowPullsAllTheScrollback(t *testing.T) {
	s := New(20, 4, 100, nil)
	defer s.Close()
	s.Write([]byte("1\r\n2\r\n3\r\n4\r\n5\r\n$ "))
	s.Resize(20, 10)
	if got := strings.Join(s.Lines(false), "|"); !strings.HasPrefix(got, "1|2|3|4|5|$|") || s.emu.ScrollbackLen() != 0 {
		t.Fatalf("screen %s, scrollback %d lines", got, s.emu.ScrollbackLen())
	}
}
