package screen

import "testing"

// TestClampSeesThroughIgnoredBytes: a byte the emulator ignores or acts on
// inside a CSI sequence must not split a number for the clamp that the
// emulator then reads whole. A DEL inside the repeat count of CSI b took
// the emulator 9.3 s for 24 bytes (found by FuzzScreen).
func TestClampSeesThroughIgnoredBytes(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"DEL in a count", "x\x1b[9999999999999\x7f999999b", "x\x1b[4096b"},
		{"DEL at the start", "\x1b[\x7f99999999X", "\x1b[4096X"},
		{"ignored prefix byte mid-number", "\x1b[999?999b", "\x1b[4096b"},
		{"control inside acts before", "\x1b[99\r99999b", "\r\x1b[4096b"},
		{"private modes pass", "\x1b[?1049h", "\x1b[?1049h"},
		{"private numbers bounded", "\x1b[?99999999999h", "\x1b[?65535h"},
		{"C1 cancels the sequence", "\x1b[99\x9b99b", "99b"},
		{"UTF-8 cancels the sequence", "\x1b[99é", "é"},
		{"C1 CSI after ESC", "\x1b\x9b9999999999999999999999X", "9999999999999999999999X"},
		{"small counts unchanged", "\x1b[1;31m\x1b[12;40H", "\x1b[1;31m\x1b[12;40H"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var s scanner
			got := string(s.feed([]byte(c.in), nil, true))
			if got != c.want {
				t.Errorf("feed(%q) = %q, want %q", c.in, got, c.want)
			}
		})
	}
}
