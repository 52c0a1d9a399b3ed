package screen

import (
	"bytes"
	"fmt"
	"runtime"
	"testing"
)

// worstOutput is output that makes every cell as costly to keep as it can
// be: a character with combining marks up to maxCluster, and its own
// foreground, background and underline colours and attributes.
func worstOutput(cells int) []byte {
	var b bytes.Buffer
	marks := bytes.Repeat([]byte("\u0301"), maxCluster/2)
	for i := range cells {
		fmt.Fprintf(&b, "\x1b[1;3;4;9;38;2;%d;%d;1;48;2;%d;2;%d;58;2;3;%d;%dm", i%256, i/256%256, i%251, i%241, i%239, i%233)
		b.WriteByte('e')
		b.Write(marks)
	}
	return b.Bytes()
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// TestWorstCaseMemory measures the most one screen keeps, whatever its
// output and its sizes: resizes that leave the emulator holding the rows
// of every width it had, a full scrollback of the widest lines, and both
// screens full of the costliest cells. Run with -v for the figure. x/vt
// widened every row it had kept on a resize that also dropped rows: about
// 300 x 1024 cells a screen whatever the bound on cells.
func TestWorstCaseMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("fills the largest screen")
	}
	before := heapInUse()
	s := New(MaxCols, MaxCells/MaxCols, MaxScrollbackLines, func([]byte) {})
	defer s.Close()
	// Each row at the widest it can be, which the emulator keeps when
	// the screen narrows: row i at MaxCells/(i+1) columns.
	top := MaxCells / MaxCols
	s.Write(worstOutput(MaxCells))
	for rows := top + 1; rows <= MaxRows; rows++ {
		s.Resize(MaxCells/rows, rows)
		s.Write(fmt.Appendf(nil, "\x1b[%dH", rows))
		s.Write(worstOutput(MaxCells / rows))
	}
	s.Resize(MaxCols, top)
	for range MaxScrollbackCells/MaxCells + 1 {
		s.Write(worstOutput(MaxCells)) // scrolls the widest lines off
	}
	s.Write([]byte("\x1b[?1049h\x1b[H"))
	s.Write(worstOutput(MaxCells))
	used := heapInUse() - before
	t.Logf("one screen keeps at most %.1f MiB (%d scrollback lines)", float64(used)/(1<<20), s.emu.ScrollbackLen())
	if used > 80<<20 {
		t.Errorf("one screen keeps %d MiB", used>>20)
	}
	runtime.KeepAlive(s)
}
