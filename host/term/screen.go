package term

import "io"

// Screen is the operator's terminal as a session's output stream. It keeps
// the last byte written, so that when a session ends without the program's
// own exit (the agent lost, the connection cut) cork can leave the terminal
// as a normal exit would and print its message on a line of its own, not
// wherever the program left the cursor.
type Screen struct {
	w     io.Writer
	wrote bool
	last  byte
}

// NewScreen returns a Screen writing to w.
func NewScreen(w io.Writer) *Screen { return &Screen{w: w} }

func (s *Screen) Write(p []byte) (int, error) {
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

// Reset leaves the terminal as a program's normal exit would: on the main
// screen, cursor visible, no mouse reporting, bracketed paste, focus events
// or application keys, default colours. Nothing is written when the session
// wrote nothing.
func (s *Screen) Reset() {
	if s.wrote {
		io.WriteString(s.w, resetModes)
	}
}

// FreshLine starts a new line unless the last byte the session wrote ended
// one.
func (s *Screen) FreshLine() {
	if s.wrote && s.last != '\n' {
		io.WriteString(s.w, "\r\n")
		s.last = '\n'
	}
}
