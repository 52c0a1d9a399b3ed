//go:build linux

package main

import (
	"strings"
	"testing"
	"time"
)

func newTestCounter() *counter { return &counter{next: 0, last: time.Now()} }

// TestCounterLinesAcrossFrames: a line cut between two frames is read
// whole, and consecutive numbers break nothing.
func TestCounterLinesAcrossFrames(t *testing.T) {
	c := newTestCounter()
	c.output([]byte("0\r\n1\r\n2"))
	c.output([]byte("\r\n3\r\n"))
	if c.broken != "" || c.lines != 4 || c.seen != 12 {
		t.Fatalf("broken %q, %d lines, %d bytes seen; want nothing broken, 4 lines, 12 bytes", c.broken, c.lines, c.seen)
	}
}

func TestCounterFindsLostAndDoubled(t *testing.T) {
	for _, tc := range []struct{ name, out, want string }{
		{"lost", "0\r\n1\r\n3\r\n", "after 1 came 3"},
		{"doubled", "0\r\n1\r\n1\r\n", "after 1 came 1"},
		{"garbled", "0\r\n1x\r\n", `line "1x" after 0`},
	} {
		c := newTestCounter()
		c.output([]byte(tc.out))
		if !strings.Contains(c.broken, tc.want) {
			t.Errorf("%s: broken %q, want it to say %q", tc.name, c.broken, tc.want)
		}
	}
}

// TestCounterAnyStartAfterRedraw: after a redraw outside the buffer the
// numbers may start anywhere, then must be consecutive again.
func TestCounterAnyStartAfterRedraw(t *testing.T) {
	c := newTestCounter()
	c.next = -1
	c.output([]byte("500\r\n501\r\n"))
	if c.broken != "" {
		t.Fatalf("broken %q after a redraw", c.broken)
	}
	c.output([]byte("503\r\n"))
	if !strings.Contains(c.broken, "after 501 came 503") {
		t.Fatalf("broken %q, want the gap after 501", c.broken)
	}
}
