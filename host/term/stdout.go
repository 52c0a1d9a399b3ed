package term

import (
	"bytes"
	"io"
	"strings"
)

// Stdout is the operator's terminal as a session's output stream. It
// follows, from the program's output, what cork needs to leave the
// terminal tidy when a session ends without the program's own exit (a
// detach, a takeover, the agent lost): the last byte written, whether the
// program is on the alternate screen, and whether it moved the cursor up
// or to a position on the main screen, so that cork's message goes on a
// line of its own below everything the program drew, not wherever the
// program left the cursor.
type Stdout struct {
	w     io.Writer
	wrote bool
	last  byte
	alt   bool // the program has the alternate screen on
	moved bool // on the main screen, the cursor went up or to a position
	osc   bool // the program wrote an OSC sequence, which may set a title
	// guard: push the host's titles before the program's first OSC;
	// pushed: they were.
	guard, pushed bool
	// partial holds the start of an escape sequence cut at the end of a
	// write, for the next one to complete.
	partial []byte
}

// NewStdout returns a Stdout writing to w.
func NewStdout(w io.Writer) *Stdout { return &Stdout{w: w} }

func (s *Stdout) Write(p []byte) (int, error) {
	s.track(p)
	if s.osc && s.guard && !s.pushed {
		io.WriteString(s.w, saveTitle)
		s.pushed = true
	}
	n, err := s.w.Write(p)
	if n > 0 {
		s.wrote, s.last = true, p[n-1]
	}
	return n, err
}

// resetModes undoes what a full-screen program may have turned on:
// mouse reporting (every encoding), focus events, bracketed paste,
// application cursor keys and keypad, hidden cursor, colours and styles,
// and the alternate screen, left last because leaving it restores the
// cursor to where it was on the main screen. The sequences are xterm's, as
// tmux and every terminal emulator in use read them.
const resetModes = "\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1005l\x1b[?1006l\x1b[?1015l" +
	"\x1b[?1004l\x1b[?2004l\x1b[?1l\x1b>\x1b[?25h\x1b[0m\x1b[?1049l"

// belowAll puts the cursor at the start of a new last line of the main
// screen: origin mode and scroll region off, so that the last row is the
// screen's, then a line feed there, which scrolls what the program drew
// up by one. dtach ends a session the same way.
const belowAll = "\x1b[?6l\x1b[r\x1b[999;1H\r\n"

// Reset leaves the terminal as a program's normal exit would: on the main
// screen, cursor visible, no mouse reporting, bracketed paste, focus events
// or application keys, default colours. Nothing is written when the session
// wrote nothing.
func (s *Stdout) Reset() {
	if s.wrote {
		io.WriteString(s.w, resetModes)
	}
}

// FreshLine starts a new line unless the last byte the session wrote ended
// one.
func (s *Stdout) FreshLine() {
	if s.wrote && s.last != '\n' {
		io.WriteString(s.w, "\r\n")
		s.last = '\n'
	}
}

// Leave resets the terminal (Reset) and puts the cursor at the start of a
// line of its own below everything the program drew, for cork's message:
// where the host's shell left it when the program was on the alternate
// screen (leaving it brings the shell's screen back, as tmux does on
// detach); below the last row when the program drew on the main screen
// with the cursor moved about (the claude TUI does, and leaves the cursor
// in the middle of its drawing); after the last line of a program that
// only wrote lines.
func (s *Stdout) Leave() {
	if !s.wrote {
		return
	}
	s.Reset()
	switch {
	case s.alt:
	case s.moved:
		io.WriteString(s.w, belowAll)
	default:
		s.FreshLine()
	}
	s.alt, s.last = false, '\n'
}

// maxSeq bounds the escape sequence kept across writes: the sequences
// tracked are a few bytes long, and longer ones are none of them.
const maxSeq = 32

// track follows the alternate screen and cursor moves in p, the next bytes
// the program wrote. Bytes between escapes are skipped with IndexByte, so
// that plain output costs next to nothing.
func (s *Stdout) track(p []byte) {
	if len(s.partial) > 0 {
		buf := append(s.partial, p[:min(len(p), maxSeq)]...)
		s.partial = s.partial[:0]
		if n := s.escape(buf); n == 0 && len(buf) < maxSeq {
			s.partial = buf // p is all in it, and the sequence goes on
			return
		}
	}
	for {
		i := bytes.IndexByte(p, 0x1b)
		if i < 0 {
			return
		}
		p = p[i:]
		n := s.escape(p)
		if n == 0 {
			if len(p) < maxSeq {
				s.partial = append(s.partial[:0], p...)
			}
			// A lone ESC may begin an OSC: a title pushed after it
			// would cut that sequence in two.
			s.osc = s.osc || len(p) == 1
			return
		}
		p = p[n:]
	}
}

// escape follows the escape sequence at the start of p (p[0] is ESC) and
// returns its length, or 0 when p ends before it does. A sequence that is
// none of those tracked counts as its first byte.
func (s *Stdout) escape(p []byte) int {
	if len(p) < 2 {
		return 0
	}
	switch p[1] {
	case 'c': // RIS: main screen, cursor home
		s.alt, s.moved = false, true
		return 2
	case 'M', '8': // reverse index, restore cursor
		s.moveOnMain()
		return 2
	case ']': // OSC: a title among others
		s.osc = true
		return 2
	case '[':
	default:
		return 1
	}
	i := 2
	private := i < len(p) && p[i] == '?'
	if private {
		i++
	}
	start := i
	for i < len(p) && (p[i] >= '0' && p[i] <= '9' || p[i] == ';') {
		i++
	}
	if i == len(p) {
		return 0
	}
	switch final := p[i]; {
	case private && (final == 'h' || final == 'l'):
		s.setModes(p[start:i], final == 'h')
	case !private && strings.IndexByte("AFHfdru", final) >= 0:
		s.moveOnMain()
	}
	return i + 1
}

func (s *Stdout) moveOnMain() {
	if !s.alt {
		s.moved = true
	}
}

// setModes follows DEC private modes params (47, 1047, 1049: the
// alternate screen) set or reset.
func (s *Stdout) setModes(params []byte, on bool) {
	for _, m := range bytes.Split(params, []byte{';'}) {
		switch string(m) {
		case "47", "1047", "1049":
			s.alt = on
		}
	}
}

// Window titles are kept on xterm's title stack (XTWINOPS 22 and 23, "0":
// the window and icon titles both), as vim keeps them: the host's titles
// are pushed before the program's first OSC sequence (the one that may set
// its title) and popped when cork leaves the session, so that the
// program's title does not stay on the host's window after a detach or an
// exit. Terminals without the stack ignore both; a program that sets no
// title gets neither.
const (
	saveTitle    = "\x1b[22;0t"
	restoreTitle = "\x1b[23;0t"
)

// GuardTitle makes s push the terminal's titles before the program's
// first OSC sequence.
func (s *Stdout) GuardTitle() { s.guard = true }

// RestoreTitle pops the titles pushed, if they were.
func (s *Stdout) RestoreTitle() {
	if s.pushed {
		io.WriteString(s.w, restoreTitle)
		s.pushed = false
	}
}
