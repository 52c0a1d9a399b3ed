package screen

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestCatchUpBoundedForAnyOutput: a backlog as large as a kept session's
// ring, of whatever makes the emulator scroll or touch the whole screen,
// catches up in bounded time on the largest screens kept. The catch-up
// counted only LF: 256 KiB of \v took a peek 21 s.
func TestCatchUpBoundedForAnyOutput(t *testing.T) {
	patterns := map[string]string{
		"VT":               "\v",
		"FF":               "\f",
		"LF":               "\n",
		"IND":              "\x1bD",
		"NEL":              "\x1bE",
		"RI":               "\x1bM",
		"scroll region LF": "\x1b[2;200r\x1b[200H\n\n\n\n",
		"scroll region RI": "\x1b[2;200r\x1b[2H\x1bM\x1bM\x1bM",
		"scroll up":        "\x1b[S",
		"scroll down":      "\x1b[T",
		"insert lines":     "\x1b[L",
		"delete lines":     "\x1b[M",
		"alignment test":   "\x1b#8",
		"erase display":    "\x1b[J",
		"wrapping text":    "xyzw",
		"wide text":        "漢字",
	}
	sizes := [][2]int{{MaxCells / MaxRows, MaxRows}, {MaxCols, MaxCells / MaxCols}, {256, 256}, {1, MaxRows}}
	if testing.Short() {
		sizes = sizes[:1]
	}
	const ring = 1 << 20
	for name, p := range patterns {
		backlog := bytes.Repeat([]byte(p), ring/len(p))
		for _, size := range sizes {
			s := New(size[0], size[1], MaxScrollbackLines, func([]byte) {})
			start := time.Now()
			s.CatchUp(backlog, true)
			s.CatchUp(backlog[:64<<10], false)
			took := time.Since(start)
			s.Close()
			t.Logf("%-17s %4dx%-3d %v", name, size[0], size[1], took)
			// Unbounded, such a backlog takes minutes; bounded, the
			// slowest pattern takes about a second alone. The bound leaves
			// room for a machine busy with other tests.
			if took > slowdown*6*time.Second {
				t.Errorf("%s at %dx%d: two catch-ups took %v", name, size[0], size[1], took)
			}
		}
	}
}

// TestCatchUpKeepsRepaints: a full-screen program's repaints, a colour
// change per character, come back whole from a large backlog. Counting
// every escape sequence as a scroll cut the catch-up to a few hundred of
// them and left the screen mostly blank.
func TestCatchUpKeepsRepaints(t *testing.T) {
	var b bytes.Buffer
	for frame := range 300 {
		b.WriteString("\x1b[H")
		for y := range 24 {
			fmt.Fprintf(&b, "\x1b[%dH", y+1)
			for x := range 80 {
				fmt.Fprintf(&b, "\x1b[38;5;%dm%c", (frame+x+y)%256, 'a'+(x+y+frame)%26)
			}
		}
	}
	whole := New(80, 24, 100, nil)
	defer whole.Close()
	whole.Write(b.Bytes())
	caught := New(80, 24, 100, nil)
	defer caught.Close()
	caught.CatchUp(b.Bytes(), true)
	if a, w := strings.Join(caught.Lines(true), "\n"), strings.Join(whole.Lines(true), "\n"); a != w {
		t.Fatalf("caught up to\n%s\nfed whole\n%s", a, w)
	}
}
