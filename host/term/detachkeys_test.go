package term

import (
	"bytes"
	"io"
	"testing"
	"time"
)

func TestParseDetachKeys(t *testing.T) {
	for spec, want := range map[string][]byte{
		"ctrl-p,ctrl-q": {0x10, 0x11},
		"ctrl-@,ctrl-q": {0x00, 0x11},
		"ctrl-\\":       {0x1c},
		"x,ctrl-a":      {'x', 0x01},
		"":              nil,
	} {
		got, err := ParseDetachKeys(spec)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%q: %v, %v; want %v", spec, got, err, want)
		}
	}
	for _, bad := range []string{"ctrl-", "ctrl-1", "ctrl-ab", "ab", ",", "ctrl-p,"} {
		if _, err := ParseDetachKeys(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// filtered feeds chunks into a filter, one write at a time, and returns
// what came out and whether it detached.
func filtered(t *testing.T, keys []byte, timeout time.Duration, chunks ...string) (string, bool) {
	t.Helper()
	pr, pw := io.Pipe()
	f := NewDetachFilter(pr, keys, timeout)
	got := make(chan []byte)
	go func() { b, _ := io.ReadAll(f); got <- b }()
	for _, c := range chunks {
		pw.Write([]byte(c))
	}
	detached := false
	select {
	case <-f.Detached():
		detached = true
		// After the keys the filter reads no more and sends no
		// end-of-file: what came before them is all there is.
		f.pw.Close()
	case <-time.After(50 * time.Millisecond):
	}
	pw.Close()
	return string(<-got), detached
}

func TestDetachFilter(t *testing.T) {
	keys := []byte{0x00, 0x11} // ctrl-@, ctrl-q
	hour := time.Hour          // no timeout gets in the way
	for _, tc := range []struct {
		name     string
		chunks   []string
		out      string
		detached bool
	}{
		{"plain input", []string{"hello"}, "hello", false},
		{"the keys", []string{"ab\x00\x11cd"}, "ab", true},
		{"the keys split across reads", []string{"ab\x00", "\x11cd"}, "ab", true},
		{"first key twice sends it once", []string{"a\x00\x00b"}, "a\x00b", false},
		{"first key then another", []string{"a\x00b"}, "a\x00b", false},
		{"the first key, then the keys", []string{"\x00x\x00\x11"}, "\x00x", true},
		{"input ends on a first key", []string{"a\x00"}, "a\x00", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, detached := filtered(t, keys, hour, tc.chunks...)
			if out != tc.out || detached != tc.detached {
				t.Fatalf("got %q detached %v, want %q %v", out, detached, tc.out, tc.detached)
			}
		})
	}
	if out, detached := filtered(t, nil, hour, "a\x00\x11b"); out != "a\x00\x11b" || detached {
		t.Fatalf("with no keys: %q, %v", out, detached)
	}
}

// TestDetachFilterTimeout: a lone first key is sent on after the timeout,
// without waiting for more input.
func TestDetachFilterTimeout(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	f := NewDetachFilter(pr, []byte{0x00, 0x11}, 20*time.Millisecond)
	go pw.Write([]byte{'a', 0x00})
	got := make([]byte, 0, 2)
	buf := make([]byte, 8)
	deadline := time.After(5 * time.Second)
	for len(got) < 2 {
		n := make(chan int, 1)
		go func() { k, _ := f.Read(buf); n <- k }()
		select {
		case k := <-n:
			got = append(got, buf[:k]...)
		case <-deadline:
			t.Fatalf("the lone first key never came through: got %q", got)
		}
	}
	if string(got) != "a\x00" {
		t.Fatalf("got %q", got)
	}
}
