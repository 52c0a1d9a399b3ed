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
	"io"
	"sync"

	uv "github.com/charmbracelet/ultraviolet"
	"github.com/charmbracelet/x/vt"
)

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
	s.emu = s.newEmulator(cols, rows)
	return s
}

func (s *Screen) newEmulator(cols, rows int) *vt.Emulator {
	e := vt.NewEmulator(max(cols, 1), max(rows, 1))
	e.SetScrollbackSize(s.scrollback)
	go drain(e, s.reply)
	return e
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
	s.emu.Write(s.buf)
	if cap(s.buf) > 64<<10 {
		s.buf = nil
	}
}

// catchUpAt is the backlog from which CatchUp feeds only the end.
const catchUpAt = 64 << 10

// CatchUp feeds a backlog of output. A small one is fed whole. A large one
// is fed from its last full-screen clear (or alternate-screen switch)
// when it has one near its end, else from the start of its last screenfuls
// of lines; what comes before is only scanned for modes. For output that
// scrolls, the screen ends the same; a full-screen program that draws
// without clearing may show gaps until its next repaint. lost says that
// output before the backlog is gone (the emulator fell behind the bytes
// the session keeps): the screen starts again from the backlog.
func (s *Screen) CatchUp(backlog []byte, lost bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	from := 0
	if len(backlog) > catchUpAt || lost {
		from = s.resyncPoint(backlog)
	}
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

// resyncPoint is where in backlog to start feeding: its last clear, if in
// its last catchUpAt bytes, else the start of a line a screen and a half
// from its end (the half for lines that wrap).
func (s *Screen) resyncPoint(backlog []byte) int {
	tail := max(0, len(backlog)-catchUpAt)
	best := -1
	for _, c := range clears {
		if i := bytes.LastIndex(backlog[tail:], c); i >= 0 && tail+i > best {
			best = tail + i
		}
	}
	if best >= 0 {
		return best
	}
	lines := s.emu.Height() * 3 / 2
	i := len(backlog)
	for ; lines > 0 && i > 0; lines-- {
		i = bytes.LastIndexByte(backlog[:i], '\n')
		if i < 0 {
			return 0
		}
	}
	if i > 0 {
		i++ // after the newline
	}
	return max(i, len(backlog)-catchUpAt)
}

// Resize changes the terminal's size, as the program's PTY changed.
func (s *Screen) Resize(cols, rows int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cols > 0 && rows > 0 && (cols != s.emu.Width() || rows != s.emu.Height()) {
		s.emu.Resize(cols, rows)
	}
}

// Size is the terminal's size.
func (s *Screen) Size() (cols, rows int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.emu.Width(), s.emu.Height()
}

// line returns row y of the screen (or of the scrollback, for y < 0:
// -1 is its newest line), cut at cols.
func (s *Screen) line(y, cols int) uv.Line {
	w := s.emu.Width()
	l := make(uv.Line, 0, min(w, cols))
	for x := 0; x < w && x < cols; x++ {
		var c *uv.Cell
		if y >= 0 {
			c = s.emu.CellAt(x, y)
		} else {
			c = s.emu.ScrollbackCellAt(x, s.emu.ScrollbackLen()+y)
		}
		if c == nil {
			l = append(l, uv.EmptyCell)
			continue
		}
		l = append(l, *c)
	}
	return l
}

// Lines returns the screen's rows, styled with escape sequences or as plain
// text, trailing spaces cut.
func (s *Screen) Lines(styled bool) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for y := range s.emu.Height() {
		l := s.line(y, s.emu.Width())
		if styled {
			out = append(out, l.Render())
		} else {
			out = append(out, l.String())
		}
	}
	return out
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
	if history && !m.altScreen && s.emu.ScrollbackLen() > 0 {
		for y := -s.emu.ScrollbackLen(); y < 0; y++ {
			b.WriteString(s.line(y, cols).Render())
			b.WriteString("\r\n")
		}
		for range rows {
			b.WriteString("\r\n")
		}
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
