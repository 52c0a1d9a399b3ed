package screen

import "bytes"

// A catch-up's work is bounded by what the output may cost the emulator,
// counted in cells it may move or clear. Its costliest steps touch every
// cell of the screen: a scroll (a line feed at the bottom: LF, VT, FF,
// IND, NEL, RI, and every line that wraps), a scroll or an insertion or
// deletion of lines, an erase of the display, the alignment test, a
// reset. Each is counted at that; a character at its share of a wrap
// (rows, since every cols of them may wrap a line); a repeat (REP) as its
// characters; a line erase or insertion of characters at a row; anything
// else at one.

// catchUpBudget is the most a catch-up feeds the emulator: enough to draw
// two screenfuls of full lines from a clear screen, and never less than
// minCatchUpBudget (about a small screen's worth of a busy program's
// repaints, and tens of milliseconds). On the largest screen kept it is
// about 2 x MaxRows x MaxCells.
func catchUpBudget(cols, rows int) int {
	return max(2*rows*rows*cols, minCatchUpBudget)
}

const minCatchUpBudget = 1 << 20

// costScan reads output as a terminal's parser does, well enough to tell
// what each byte may cost.
type costScan struct {
	state      state
	hash       bool // after ESC #
	n          int  // the CSI's last number, bounded
	rows, cols int
}

// cost is what c may cost the emulator.
func (cs *costScan) cost(c byte) int {
	cells := cs.rows * cs.cols
	if c == '\n' || c == '\v' || c == '\f' {
		return cells // executed in any state but strings, where it is cheap anyway
	}
	switch cs.state {
	case ground:
		switch {
		case c == 0x1b:
			cs.state, cs.hash = escape, false
		case c >= 0x20 && c != 0x7f && (c < 0x80 || c >= 0xc0):
			return cs.rows
		}
	case escape:
		cs.state = ground
		switch {
		case cs.hash:
			return cells // DECALN and its kin
		case c == '[':
			cs.state, cs.n = csi, 0
		case c == ']', c == 'P', c == '_', c == '^', c == 'X':
			cs.state = str
		case c == '#':
			cs.state, cs.hash = escape, true
		case c == 'D', c == 'E', c == 'M', c == 'c':
			return cells
		}
	case csi:
		switch {
		case c >= '0' && c <= '9':
			cs.n = min(cs.n*10+int(c-'0'), maxParam)
		case c == 0x1b:
			cs.state, cs.hash = escape, false
		case c >= 0x40 && c <= 0x7e:
			cs.state = ground
			return cs.csiCost(c)
		case c == 0x7f, c >= '<' && c <= '?':
			// Ignored inside the numbers, as by the clamp.
		default:
			cs.n = 0
		}
	case str, strEsc:
		switch {
		case c == 0x07, c == 0x18, c == 0x1a:
			cs.state = ground
		case c == 0x1b:
			cs.state, cs.hash = escape, false
		}
	}
	return 1
}

// csiCost is what a CSI sequence ending in final may cost.
func (cs *costScan) csiCost(final byte) int {
	switch final {
	case 'J', 'L', 'M', 'S', 'T', 'r':
		return cs.rows * cs.cols
	case 'K', 'X', '@', 'P':
		return cs.cols
	case 'b':
		return max(cs.n, 1) * cs.rows
	}
	return 1
}

// costOf is what p may cost the emulator, from a terminal's ground state.
func costOf(p []byte, cols, rows int) int {
	cs := costScan{rows: rows, cols: cols}
	total := 0
	for _, c := range p {
		total += cs.cost(c)
	}
	return total
}

// resyncPoint is where in backlog to start feeding: 0 when all of it fits
// in the catch-up's budget, else its last clear within the budget, else
// the earliest byte from which the rest fits.
func (s *Screen) resyncPoint(backlog []byte) int {
	cols, rows := s.emu.Width(), s.emu.Height()
	budget := catchUpBudget(cols, rows)
	over := costOf(backlog, cols, rows) - budget
	if over <= 0 {
		return 0
	}
	cs := costScan{rows: rows, cols: cols}
	i := 0
	for ; i < len(backlog) && over > 0; i++ {
		over -= cs.cost(backlog[i])
	}
	best := i
	for _, c := range clears {
		if j := bytes.LastIndex(backlog[i:], c); j >= 0 && i+j > best {
			best = i + j
		}
	}
	return best
}
