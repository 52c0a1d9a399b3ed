package term

import (
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
