package term

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Printable escapes what a terminal would act on in s: control characters
// (C0, DEL and C1, as Go spells them: \x1b, \n, \u009b) and bytes that are
// not UTF-8, which a terminal in an 8-bit mode reads as C1 controls. Text
// that came from the agent (its messages, session names, programs, users)
// goes through it before it reaches the operator's terminal: a guest must
// not be able to drive the host's terminal by naming things.
func Printable(s string) string {
	if strings.IndexFunc(s, unicode.IsControl) < 0 && utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i, r := range s {
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(s[i:], "\uFFFD"):
			b.WriteString(`\x`)
			b.WriteString(strconv.FormatUint(uint64(s[i])>>4, 16))
			b.WriteString(strconv.FormatUint(uint64(s[i])&15, 16))
		case unicode.IsControl(r):
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// PrintableJSON escapes, in JSON that encoding/json wrote, the controls it
// leaves as they are: DEL and the C1 controls (U+0080 to U+009F, C2 80 to
// C2 9F in UTF-8), which some terminals act on. It writes them as \u
// escapes, which decode to the same strings; they occur only inside
// strings, where \u is valid.
func PrintableJSON(b []byte) []byte {
	var out []byte // nil until there is something to escape
	done := 0      // b[:done] is in out
	for i := 0; i < len(b); i++ {
		var r byte
		switch {
		case b[i] == 0x7f:
			r = 0x7f
		case b[i] == 0xc2 && i+1 < len(b) && b[i+1] >= 0x80 && b[i+1] <= 0x9f:
			r = b[i+1]
		default:
			continue
		}
		out = append(out, b[done:i]...)
		out = fmt.Appendf(out, `\u%04x`, r)
		if r != 0x7f {
			i++
		}
		done = i + 1
	}
	if out == nil {
		return b
	}
	return append(out, b[done:]...)
}
