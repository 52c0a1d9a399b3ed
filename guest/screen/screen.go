// Package screen keeps the screen of a kept session's terminal from the
// output its program writes, so that a client attaching later gets the
// screen back rather than a blank one: the text with its colours and
// styles, the alternate screen, the cursor, and the input modes the program
// turned on. Raw replay of old output does not do that: a buffer that
// starts mid-sequence garbles the screen and loses the mode switches
// (atomantic/PortOS#7547), and old frames replay at the wrong width
// (Gaurav-Gosain/tuios#139).
//
// The terminal emulator is charmbracelet/x/vt, behind this package's few
// methods (Write, Resize, Render, Lines) so that it can be replaced. Its
// weak points are handled here: CSI numbers are clamped before it sees them
// (a repeat count of a billion takes it minutes), its answers to terminal
// queries are drained (unread, they block it), and output that scrolls is
// slow for it (it moves every cell of the screen per line), so a large
// backlog is caught up by feeding only its last screenfuls (CatchUp).
package screen

import (
	"bytes"
	"fmt"
	"io"
	"reflect"
	"slices"
	"sync"
	"unsafe"

	uv "github.com/charmbracelet/ultraviolet"
	"github.com/charmbracelet/x/vt"
)

// The most a screen keeps, whatever size its terminal is set to and
// whatever the program writes: the memory of a kept session's screen is
// bounded by these (and by maxCluster and maxString). A terminal larger
// than MaxCols x MaxRows or MaxCells is kept as its top-left part.
const (
	MaxCols            = 1024
	MaxRows            = 300
	MaxCells           = 1 << 15
	MaxScrollbackLines = 10000
	MaxScrollbackCells = 1 << 17
)

// fit bounds a terminal's size to what a screen keeps.
func fit(cols, rows int) (int, int) {
	cols = min(max(cols, 1), MaxCols)
	return cols, min(max(rows, 1), MaxRows, MaxCells/cols)
}

// Screen is one terminal's screen. Its methods are safe for concurrent use.
type Screen struct {
	mu         sync.Mutex
	emu        *vt.Emulator
	scan       scanner
	scrollback int
	reply      func([]byte)
	buf        []byte // write's clamped bytes, reused
}

// New returns the screen of a terminal of cols x rows that keeps up to
// scrollback lines scrolled off its top. Queries the program makes of its
// terminal (device attributes, cursor position) are answered through
// reply, which must not call back into the Screen.
func New(cols, rows, scrollback int, reply func([]byte)) *Screen {
	s := &Screen{scrollback: scrollback, reply: reply}
	s.newEmulator(cols, rows)
	return s
}

func (s *Screen) newEmulator(cols, rows int) {
	e := vt.NewEmulator(fit(cols, rows))
	noAltScrollback(e)
	s.emu = e
	s.scan.cols, s.scan.rows = e.Width(), e.Height()
	s.fitScrollback()
	go drain(e, s.reply)
}

// noAltScrollback takes the scrollback off x/vt's alternate screen, which
// keeps 10,000 lines of its own that nothing reads and no method bounds.
// x/vt gives no other way to reach it; TestAltScreenKeepsNoScrollback
// fails if its layout changes.
func noAltScrollback(e *vt.Emulator) {
	f := reflect.ValueOf(e).Elem().FieldByName("scrs")
	if f.Type() != reflect.TypeFor[[2]vt.Screen]() {
		panic("screen: x/vt's Emulator has no [2]Screen scrs field")
	}
	scrs := (*[2]vt.Screen)(unsafe.Pointer(f.UnsafeAddr()))
	scrs[1].SetScrollback(nil)
}

// fitScrollback bounds the scrollback to the lines asked for, and to
// MaxScrollbackCells for lines as wide as the widest it holds or will.
// At least one line is kept, since x/vt reads 0 as its default.
func (s *Screen) fitScrollback() {
	w := s.emu.Width()
	for _, l := range s.emu.Scrollback().Lines() {
		w = max(w, len(l))
	}
	s.emu.SetScrollbackSize(max(1, min(s.scrollback, MaxScrollbackLines, MaxScrollbackCells/w)))
}

// drain reads the emulator's answers to queries, which block it while
// unread (neurosnap/zmx#230), until it is closed.
func drain(e *vt.Emulator, reply func([]byte)) {
	buf := make([]byte, 1024)
	for {
		n, err := e.Read(buf)
		if n > 0 && reply != nil {
			reply(append([]byte(nil), buf[:n]...))
		}
		if err != nil {
			return
		}
	}
}

// Close ends the screen.
func (s *Screen) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	closeEmulator(s.emu)
}

// closeEmulator ends the goroutine draining e by closing e's answer pipe.
// e.Close would do it too, but it sets a field that e.Read reads
// unguarded.
func closeEmulator(e *vt.Emulator) {
	if pw, ok := e.InputPipe().(*io.PipeWriter); ok {
		pw.Close()
	}
}

// Write feeds output to the screen.
func (s *Screen) Write(p []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.write(p)
}

func (s *Screen) write(p []byte) {
	s.buf = s.scan.feed(p, s.buf[:0], true)
	s.feedEmulator(s.buf)
	if cap(s.buf) > 64<<10 {
		s.buf = nil
	}
}

// feedEmulator writes p to the emulator. A panic in it (x/vt has indexed
// out of its screen on sequences it does not bound) must not end corkd and
// every session with it: the screen starts again, blank.
func (s *Screen) feedEmulator(p []byte) {
	defer func() {
		if recover() != nil {
			s.restart()
		}
	}()
	s.emu.Write(p)
}

// CatchUp feeds a backlog of output. A backlog that may cost the emulator
// more than a catch-up's budget (catchUpBudget) is fed from its last
// full-screen clear (or alternate-screen switch) within that budget, or
// else from as far back as the budget reaches; what comes before is only
// scanned for modes. For output that scrolls, the screen ends the same; a
// full-screen program that draws without clearing may show gaps until its
// next repaint. lost says that output before the backlog is gone (the
// emulator fell behind the bytes the session keeps): the screen starts
// again from the backlog.
func (s *Screen) CatchUp(backlog []byte, lost bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	from := s.resyncPoint(backlog)
	if from > 0 || lost {
		s.scan.feed(backlog[:from], nil, false)
		s.restart()
	}
	s.write(backlog[from:])
}

// restart gives the emulator a fresh screen in the modes scanned so far:
// a terminal reset (RIS), which x/vt does in place, rather than a new
// emulator, which would allocate its screens and buffers again.
func (s *Screen) restart() {
	s.emu.Write([]byte("\x1bc"))
	s.emu.ClearScrollback()
	if s.scan.modes.altScreen {
		s.emu.Write([]byte("\x1b[?1049h"))
	}
}

// clears are the sequences after which nothing before matters on the
// screen.
var clears = [][]byte{[]byte("\x1b[2J"), []byte("\x1b[?1049h"), []byte("\x1b[?1049l"), []byte("\x1bc")}

// Resize changes the terminal's size, as the program's PTY changed. Rows
// go and come as in tmux, so that a smaller client attaching for a while
// costs the screen nothing: on a shrink, the rows below the cursor go
// first, then the top rows, into the scrollback on the main screen; on a
// grow, lines come back from the scrollback. The cursor's row stays.
func (s *Screen) Resize(cols, rows int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cols <= 0 || rows <= 0 {
		return
	}
	cols, rows = fit(cols, rows)
	h := s.emu.Height()
	if cols == s.emu.Width() && rows == h {
		return
	}
	if cur := s.emu.CursorPosition(); rows < h && cur.Y >= rows {
		top := cur.Y - rows + 1
		s.feedEmulator(fmt.Appendf(nil, "\x1b[r\x1b[%dS\x1b[%d;%dH", top, cur.Y-top+1, cur.X+1))
	}
	// x/vt widens every row it had before it drops rows it no longer
	// needs, and keeps the rows dropped: rows go first, so that a resize
	// never allocates more than the cells of the larger of the two sizes.
	for _, size := range [][2]int{{s.emu.Width(), min(h, rows)}, {cols, min(h, rows)}, {cols, rows}} {
		if size[0] != s.emu.Width() || size[1] != s.emu.Height() {
			s.emu.Resize(size[0], size[1])
		}
	}
	s.scan.cols, s.scan.rows = cols, rows
	if rows > h && !s.emu.IsAltScreen() {
		s.pullScrollback(min(rows-h, s.emu.ScrollbackLen()))
	}
	s.fitScrollback()
}

// pullScrollback moves the newest n lines of the scrollback back onto the
// top of the screen, and the screen and the cursor down.
func (s *Screen) pullScrollback(n int) {
	if n <= 0 {
		return
	}
	sb := s.emu.Scrollback()
	lines := sb.Lines()
	pulled := slices.Clone(lines[len(lines)-n:])
	if n == len(lines) {
		sb.Clear()
	} else {
		// x/vt's scrollback drops only its oldest lines: the others
		// move up over the pulled ones first.
		copy(lines[n:], lines[:len(lines)-n])
		sb.SetMaxLines(len(lines) - n)
	}
	cur := s.emu.CursorPosition()
	s.feedEmulator(fmt.Appendf(nil, "\x1b[r\x1b[%dT", n))
	for y, l := range pulled {
		for x := range min(len(l), s.emu.Width()) {
			if !l[x].IsZero() {
				s.emu.SetCell(x, y, &l[x])
			}
		}
	}
	s.feedEmulator(fmt.Appendf(nil, "\x1b[%d;%dH", cur.Y+n+1, cur.X+1))
}

// Size is the terminal's size.
func (s *Screen) Size() (cols, rows int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.emu.Width(), s.emu.Height()
}

// line returns row y of the screen (or of the scrollback, for y < 0:
// -1 is its newest line), cut at cols. A scrollback line keeps the width
// it was written at.
func (s *Screen) line(y, cols int) uv.Line {
	var src uv.Line
	if y < 0 {
		src = s.emu.Scrollback().Line(s.emu.ScrollbackLen() + y)
	} else {
		src = make(uv.Line, s.emu.Width())
		for x := range src {
			if c := s.emu.CellAt(x, y); c != nil {
				src[x] = *c
			} else {
				src[x] = uv.EmptyCell
			}
		}
	}
	return src[:min(len(src), cols)]
}

// maxLinesSize bounds what Lines returns, as JSON writes it, so that a
// peek's answer fits in a frame (protocol.MaxPayload).
const maxLinesSize = 768 << 10

// Lines returns the screen's rows, styled with escape sequences or as plain
// text, trailing spaces cut. Rows past maxLinesSize lose their styles,
// then their text.
func (s *Screen) Lines(styled bool) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	size := 0
	for y := range s.emu.Height() {
		l := s.line(y, s.emu.Width())
		text := l.String()
		if r := l.Render(); styled && size+jsonSize(r) <= maxLinesSize {
			text = r
		}
		if size+jsonSize(text) > maxLinesSize {
			text = ""
		}
		size += jsonSize(text)
		out = append(out, text)
	}
	return out
}

// jsonSize is at least the size of s as a JSON string in a list: controls
// and the characters Go escapes for HTML take six bytes, a non-ASCII byte
// two (U+2028 and U+2029 are escaped too).
func jsonSize(s string) int {
	n := 3
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20, c == '<', c == '>', c == '&':
			n += 6
		case c == '"', c == '\\', c >= 0x80:
			n += 2
		default:
			n++
		}
	}
	return n
}

// Cursor is the cursor's position (0-based) and whether it shows.
func (s *Screen) Cursor() (col, row int, visible bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.emu.CursorPosition()
	return p.X, p.Y, !s.scan.modes.cursorHidden
}

// AltScreen reports whether the program is on the alternate screen.
func (s *Screen) AltScreen() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.scan.modes.altScreen
}

// maxScrollbackRender bounds the scrollback a Render writes: its newest
// lines, as many as fit.
const maxScrollbackRender = 512 << 10

// renderScrollback writes the kept scrollback lines that are to be shown
// (the newest, up to the lines asked for and maxScrollbackRender bytes),
// then pushes them into the terminal's own scrollback with rows newlines.
func (s *Screen) renderScrollback(b *bytes.Buffer, cols, rows int) {
	n := min(s.emu.ScrollbackLen(), s.scrollback)
	var lines []string
	size := 0
	for y := -1; y >= -n; y-- {
		l := s.line(y, cols).Render()
		if size += len(l) + 2; size > maxScrollbackRender {
			break
		}
		lines = append(lines, l)
	}
	if len(lines) == 0 {
		return
	}
	for i := len(lines) - 1; i >= 0; i-- {
		b.WriteString(lines[i])
		b.WriteString("\r\n")
	}
	for range rows {
		b.WriteString("\r\n")
	}
}

// Render returns what puts the screen on a terminal of cols x rows that
// shows something else: the screen reset, the alternate screen entered if
// the program is on it, the kept scrollback lines (main screen only) so
// that they land in the terminal's own scrollback, the screen with its
// colours and styles, the cursor, and the input modes. A terminal smaller
// than the screen shows the part with the cursor in it; a larger one, the
// screen and blank space.
func (s *Screen) Render(cols, rows int) []byte { return s.render(cols, rows, false, true) }

// RenderScreen is Render without the lines scrolled off the screen, for a
// terminal that holds them already.
func (s *Screen) RenderScreen(cols, rows int) []byte { return s.render(cols, rows, false, false) }

// Repaint is Render for a terminal that shows an earlier Render or Repaint
// of this screen: it draws over it, line by line, without clearing first,
// so that a watcher's view does not flicker, and leaves its modes alone.
// Terminals that know synchronized output (mode 2026) show it at once.
func (s *Screen) Repaint(cols, rows int) []byte { return s.render(cols, rows, true, false) }

func (s *Screen) render(cols, rows int, repaint, history bool) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b bytes.Buffer
	m := s.scan.modes
	if repaint {
		b.WriteString("\x1b[?2026h\x1b[0m")
	} else {
		b.WriteString("\x1b[0m")
		if m.altScreen {
			b.WriteString("\x1b[?1049h")
		}
		b.WriteString("\x1b[H\x1b[2J")
	}
	if history && !m.altScreen {
		s.renderScrollback(&b, cols, rows)
	}
	h := s.emu.Height()
	cur := s.emu.CursorPosition()
	top := 0
	if h > rows {
		top = min(max(cur.Y-rows+1, 0), h-rows)
	}
	for y := top; y < h && y < top+rows; y++ {
		b.WriteString("\x1b[")
		b.Write(appendInt(nil, y-top+1))
		b.WriteString(";1H")
		b.WriteString(s.line(y, cols).Render())
		if repaint {
			b.WriteString("\x1b[K")
		}
	}
	if repaint {
		b.WriteString("\x1b[J")
	}
	b.WriteString("\x1b[")
	b.Write(appendInt(nil, cur.Y-top+1))
	b.WriteByte(';')
	b.Write(appendInt(nil, min(cur.X, cols-1)+1))
	b.WriteByte('H')
	if m.cursorHidden {
		b.WriteString("\x1b[?25l")
	} else {
		b.WriteString("\x1b[?25h")
	}
	if repaint {
		b.WriteString("\x1b[?2026l")
		return b.Bytes()
	}
	set := func(on bool, seq string) {
		if on {
			b.WriteString(seq)
		}
	}
	if t := s.scan.title; t.osc != 0 {
		b.WriteString("\x1b]")
		b.WriteByte(t.osc)
		b.WriteByte(';')
		b.Write(t.text)
		b.WriteString("\x1b\\")
	}
	set(m.bracketedPaste, "\x1b[?2004h")
	set(m.appCursor, "\x1b[?1h")
	set(m.appKeypad, "\x1b=")
	set(m.focus, "\x1b[?1004h")
	for i, on := range m.mouse {
		if on {
			b.WriteString("\x1b[?")
			b.Write(appendInt(nil, mouseModes[i]))
			b.WriteByte('h')
		}
	}
	return b.Bytes()
}
