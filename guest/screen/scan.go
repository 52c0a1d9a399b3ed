package screen

import (
	"bytes"

	"github.com/charmbracelet/x/ansi"
)

// scanner reads a program's output as a terminal would, for two things the
// emulator cannot be trusted with: it clamps the numbers of CSI sequences
// (x/vt spends minutes on CSI 1000000000 b, a repeat count), and it follows
// the modes that a client attaching must get back (alternate screen,
// bracketed paste, mouse reporting, application keys, focus events, cursor
// visibility) and the window title, over output the emulator is fed and
// output it skips alike. It also bounds what one cell and one string
// sequence can make the emulator keep. It is fed in chunks; sequences and
// characters may be split across them.
type scanner struct {
	state   state
	cp      []byte // the UTF-8 character being read, held until it is whole
	cpLen   int    // its length, from its first byte
	cluster []byte // the grapheme cluster the characters so far end with
	seq     []byte // the CSI sequence so far, from its ESC
	long    bool   // the CSI sequence outgrew maxCSI: it is dropped
	str     []byte // the string sequence (OSC, DCS...) so far, from its ESC
	strLong bool   // the string outgrew maxString: it is dropped
	modes   modes
	title   title

	// The screen's size, for the margins: x/vt indexes out of its
	// screen with margins past it.
	cols, rows int
}

// title is the window title a program set with OSC 0 or OSC 2.
type title struct {
	text []byte
	osc  byte // '0' or '2'
}

type state uint8

const (
	ground state = iota
	escape       // after ESC
	csi          // after ESC [
	str          // in an OSC, DCS, APC, PM or SOS string, until BEL or ST
	strEsc       // ESC inside a string: ST if a backslash follows
)

// maxParam is the largest CSI number passed on: no terminal is larger, and
// a count of a billion is an attack, not a repaint.
const maxParam = 4096

// maxMode bounds the numbers of private sequences (DECSET and its kin),
// which name modes; the largest in use are in the thousands.
const maxMode = 65535

// maxCSI bounds a CSI sequence kept whole; a longer one is dropped.
const maxCSI = 512

// maxString bounds a string sequence (a title, a colour, a DCS): a longer
// one is dropped whole, so that the emulator never keeps one. Hyperlinks
// (OSC 8) are dropped whatever their length, since every cell would keep
// its own.
const maxString = 2048

// maxCluster bounds the bytes of one grapheme cluster, which the emulator
// keeps in one cell: characters that would join a cluster past it are
// dropped, as terminals drop combining marks past a few per cell. The
// longest emoji sequences in use are about 35 bytes.
const maxCluster = 48

// modes are the terminal modes a restore sets again.
type modes struct {
	altScreen      bool
	cursorHidden   bool
	bracketedPaste bool
	appCursor      bool // DECCKM, ?1
	appKeypad      bool // DECKPAM, ESC =
	focus          bool // ?1004
	mouse          [6]bool
}

// mouseModes are the DEC private modes of mouse reporting, in mouse's
// order.
var mouseModes = [6]int{1000, 1002, 1003, 1005, 1006, 1015}

// feed scans p; when emit is set, it appends to out the bytes to pass to
// the emulator (p with CSI numbers clamped) and returns it.
func (s *scanner) feed(p []byte, out []byte, emit bool) []byte {
	for i := 0; i < len(p); i++ {
		c := p[i]
		again := false // c ended a state and is read again in the next
		switch s.state {
		case ground:
			switch {
			case c == 0x1b:
				out = s.endCluster(out, emit)
				s.state = escape
			case c < 0x80:
				out = s.endCluster(out, emit)
				if emit {
					// Copy the run of ASCII up to the next ESC or
					// high byte at once.
					j := i + 1
					for j < len(p) && p[j] < 0x80 && p[j] != 0x1b {
						j++
					}
					out = append(out, p[i:j]...)
					i = j - 1
				}
			default:
				out = s.highByte(c, out, emit)
			}
		case escape:
			out, again = s.escapeByte(c, out, emit)
		case csi:
			out, again = s.csiByte(c, out, emit)
		case str:
			out = s.strByte(c, out, emit)
		case strEsc:
			out, again = s.strEscByte(c, out, emit)
		}
		if again {
			i--
		}
	}
	return out
}

// highByte reads a byte of 0x80 or more in ground: part of a UTF-8
// character, or a byte no character holds here.
func (s *scanner) highByte(c byte, out []byte, emit bool) []byte {
	switch {
	case c < 0xc0 && len(s.cp) > 0: // a continuation byte
		s.cp = append(s.cp, c)
		if len(s.cp) == s.cpLen {
			out = s.endChar(out, emit)
		}
	case c < 0xa0:
		// A C1 control (0x9b is an 8-bit CSI): UTF-8 programs do not
		// send them, and they would get past the clamp. Dropped.
	case c >= 0xc2 && c <= 0xf4: // a UTF-8 lead byte
		if len(s.cp) > 0 { // the one before was cut short
			out = s.endCluster(out, emit)
		}
		s.cp, s.cpLen = append(s.cp[:0], c), 2
		if c >= 0xe0 {
			s.cpLen = 3
		}
		if c >= 0xf0 {
			s.cpLen = 4
		}
	default: // a byte no UTF-8 character holds here
		out = s.endCluster(out, emit)
		if emit {
			out = append(out, c)
		}
	}
	return out
}

// escapeByte reads the byte after an ESC; again reports that it is to be
// read again, in ground.
func (s *scanner) escapeByte(c byte, out []byte, emit bool) (_ []byte, again bool) {
	if c >= 0x80 {
		// As in a sequence: the emulator's parser drops the ESC, and a
		// C1 byte after it (0x9b is CSI) must not get past the clamp.
		s.state = ground
		return out, true
	}
	switch c {
	case '[':
		s.state, s.seq, s.long = csi, append(s.seq[:0], 0x1b, '['), false
		return out, false
	case ']', 'P', '_', '^', 'X':
		s.state, s.str, s.strLong = str, append(s.str[:0], 0x1b, c), false
		return out, false
	case '=':
		s.modes.appKeypad, s.state = true, ground
	case '>':
		s.modes.appKeypad, s.state = false, ground
	case 'c': // RIS: the terminal's full reset
		s.modes, s.state = modes{}, ground
	case 0x1b:
		// ESC ESC: the first one stands alone.
		if emit {
			out = append(out, 0x1b)
		}
		return out, false
	default:
		s.state = ground
	}
	if emit {
		out = append(out, 0x1b, c)
	}
	return out, false
}

// csiByte reads a byte of a CSI sequence; again reports that it is to be
// read again, in ground.
func (s *scanner) csiByte(c byte, out []byte, emit bool) (_ []byte, again bool) {
	if c == 0x7f {
		return out, false // DEL is ignored inside a sequence, as terminals do
	}
	if c >= 0x80 {
		// A C1 control or a UTF-8 byte cancels the sequence in the
		// emulator's parser; it is read again in ground.
		s.state = ground
		return out, true
	}
	if len(s.seq) < maxCSI {
		s.seq = append(s.seq, c)
	} else {
		s.long = true
	}
	switch {
	case c >= 0x40 && c <= 0x7e: // the final byte
		s.state = ground
		if !s.long {
			out = s.finishCSI(out, emit)
		}
	case c == 0x18 || c == 0x1a: // CAN, SUB: the sequence is cancelled
		s.seq = s.seq[:len(s.seq)-1]
		s.state = ground
		if emit {
			out = append(out, c)
		}
	case c < 0x20 && c != 0x1b:
		// A control character inside a CSI sequence is acted on as
		// usual; the sequence goes on.
		s.seq = s.seq[:len(s.seq)-1]
		if emit {
			out = append(out, c)
		}
	case c == 0x1b:
		s.state = escape // the sequence is cancelled
	}
	return out, false
}

// strByte reads a byte of a string sequence (OSC, DCS, APC, PM, SOS).
func (s *scanner) strByte(c byte, out []byte, emit bool) []byte {
	switch {
	case c == 0x07: // BEL ends it
		s.state = ground
		out = s.endString(out, emit, "\x07")
	case c == 0x18, c == 0x1a: // CAN and SUB cancel it
		s.state = ground
		if emit {
			out = append(out, c)
		}
	case c == 0x1b:
		// ST is ESC \; any other escape sequence ends the string and
		// begins, as a terminal's parser reads it.
		s.state = strEsc
	case c >= 0x80 && c < 0xa0:
		// C1 bytes, as in ground: dropped
	case len(s.str) < maxString:
		s.str = append(s.str, c)
	default:
		s.strLong = true
	}
	return out
}

// strEscByte reads the byte after an ESC in a string sequence, which the
// ESC ends; again reports that it is to be read again, beginning an escape
// sequence.
func (s *scanner) strEscByte(c byte, out []byte, emit bool) (_ []byte, again bool) {
	out = s.endString(out, emit, "\x1b\\")
	if c == '\\' {
		s.state = ground
		return out, false
	}
	s.state = escape
	return out, true
}

// endChar takes the UTF-8 character held in s.cp, now whole: it joins the
// cluster before it or begins the next one. One that would make its
// cluster longer than maxCluster is dropped. The clusters are found as the
// emulator finds them, by the same segmenter, from the last one only.
func (s *scanner) endChar(out []byte, emit bool) []byte {
	ch := s.cp
	s.cp = s.cp[:0]
	n := len(s.cluster)
	s.cluster = append(s.cluster, ch...)
	if n > 0 {
		first, _ := ansi.FirstGraphemeCluster(s.cluster, ansi.GraphemeWidth)
		if len(first) <= n { // ch begins a new cluster
			s.cluster = append(s.cluster[:0], ch...)
		} else if len(s.cluster) > maxCluster {
			s.cluster = s.cluster[:n]
			return out
		}
	}
	if emit {
		out = append(out, ch...)
	}
	return out
}

// endCluster ends the cluster being read: the emulator begins a new one
// after any ASCII byte, control or sequence. A character cut short is
// passed on as it is, for the emulator to replace.
func (s *scanner) endCluster(out []byte, emit bool) []byte {
	if emit {
		out = append(out, s.cp...)
	}
	s.cp, s.cluster = s.cp[:0], s.cluster[:0]
	return out
}

// endString passes on the string sequence read, ended by term, unless it
// was too long or is a hyperlink; a title is noted.
func (s *scanner) endString(out []byte, emit bool, term string) []byte {
	if s.strLong {
		return out
	}
	if body := s.str[2:]; s.str[1] == ']' {
		if bytes.HasPrefix(body, []byte("8;")) {
			return out
		}
		s.noteTitle(body)
	}
	if emit {
		out = append(append(out, s.str...), term...)
	}
	return out
}

// noteTitle keeps the title an OSC 0 or OSC 2 sets, without the control
// characters a terminal ignores in it.
func (s *scanner) noteTitle(body []byte) {
	if len(body) < 2 || body[1] != ';' || (body[0] != '0' && body[0] != '2') {
		return
	}
	t := s.title.text[:0]
	for _, c := range body[2:] {
		if c >= 0x20 && c != 0x7f {
			t = append(t, c)
		}
	}
	s.title = title{text: t, osc: body[0]}
}

// finishCSI follows the modes a complete CSI sequence sets, and passes it
// on with its numbers clamped. Private sequences (a ?, <, = or > after the
// [) carry mode numbers, not counts, and get the larger bound of modes.
func (s *scanner) finishCSI(out []byte, emit bool) []byte {
	seq := s.seq
	params, final := seq[2:len(seq)-1], seq[len(seq)-1]
	private := len(params) > 0 && params[0] >= '<' && params[0] <= '?'
	if private && params[0] == '?' && (final == 'h' || final == 'l') {
		s.setModes(params[1:], final == 'h')
	}
	if !emit {
		return out
	}
	out = append(out, 0x1b, '[')
	limit := maxParam
	switch {
	case final == 'r' && s.rows > 0: // DECSTBM, the top and bottom margins
		limit = s.rows
	case final == 's' && s.cols > 0: // DECSLRM, the left and right margins
		limit = s.cols
	}
	if private {
		// A private prefix carries mode numbers, not counts.
		out = append(out, params[0])
		params, limit = params[1:], maxMode
	}
	return append(appendParams(out, params, limit), final)
}

// appendParams appends params with every number clamped to limit. The
// emulator ignores '<' to '?' after the first parameter byte, so they are
// dropped rather than allowed to split a number in two for the clamp
// and join it again in the emulator.
func appendParams(out, params []byte, limit int) []byte {
	n, digits := 0, 0
	flush := func() {
		if digits > 0 {
			out = appendInt(out, min(n, limit))
		}
		n, digits = 0, 0
	}
	for _, c := range params {
		switch {
		case c >= '0' && c <= '9':
			if n <= limit {
				n = n*10 + int(c-'0')
			}
			digits++
		case c >= '<' && c <= '?':
		default:
			flush()
			out = append(out, c)
		}
	}
	flush()
	return out
}

func (s *scanner) setModes(params []byte, on bool) {
	for _, field := range bytes.Split(params, []byte{';'}) {
		n := 0
		for _, c := range field {
			if c < '0' || c > '9' || n > 1<<20 {
				n = -1
				break
			}
			n = n*10 + int(c-'0')
		}
		switch n {
		case 1:
			s.modes.appCursor = on
		case 25:
			s.modes.cursorHidden = !on
		case 47, 1047, 1049:
			s.modes.altScreen = on
		case 1004:
			s.modes.focus = on
		case 2004:
			s.modes.bracketedPaste = on
		default:
			for i, m := range mouseModes {
				if n == m {
					s.modes.mouse[i] = on
				}
			}
		}
	}
}

func appendInt(b []byte, n int) []byte {
	if n >= 10 {
		b = appendInt(b, n/10)
	}
	return append(b, byte('0'+n%10))
}
