package cli

import "testing"

// TestPrintable: an agent's message reaches the terminal with its control
// characters escaped, and plain text as it is.
func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"permission denied":       "permission denied",
		"no space left on device": "no space left on device",
		"evil\x1b]0;title\x07":    `evil\x1b]0;title\a`,
		"two\nlines":              `two\nlines`,
		"unicode é stays":         "unicode é stays",
		"c1 \u009b control":       `c1 \u009b control`,
	} {
		if got := printable(in); got != want {
			t.Errorf("printable(%q) = %q, want %q", in, got, want)
		}
	}
}
