package term

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// DefaultDetachKeys detach from a kept session: Ctrl-Space (Ctrl-@), then
// Ctrl-Q, as shpool's. docker's Ctrl-P,Ctrl-Q swallows readline's
// previous-history key (moby/moby#16679); Ctrl-Space is no key of readline,
// vim or the claude TUI's in common use, and a lone one still gets through
// (see DetachFilter).
const DefaultDetachKeys = "ctrl-@,ctrl-q"

// DetachKeyTimeout is how long the first detach key waits for the next
// before it is sent on as typed.
const DetachKeyTimeout = 500 * time.Millisecond

// ParseDetachKeys parses docker's syntax: keys separated by commas, each a
// single character or ctrl- and one of a-z, @, [, \, ], ^, _. An empty spec
// turns detaching off (no keys).
func ParseDetachKeys(spec string) ([]byte, error) {
	if spec == "" {
		return nil, nil
	}
	var keys []byte
	for _, k := range strings.Split(spec, ",") {
		if c, ok := strings.CutPrefix(strings.ToLower(k), "ctrl-"); ok && len(c) == 1 {
			switch ch := c[0]; {
			case ch >= 'a' && ch <= 'z':
				keys = append(keys, ch-'a'+1)
				continue
			case strings.IndexByte("@[\\]^_", ch) >= 0:
				keys = append(keys, ch-'@')
				continue
			}
		} else if len(k) == 1 && k[0] > ' ' && k[0] < 0x7f {
			keys = append(keys, k[0])
			continue
		}
		return nil, fmt.Errorf("detach keys %q: %q is not a key (want a character, or ctrl- and a-z, @, [, \\, ], ^ or _)", spec, k)
	}
	return keys, nil
}

// DetachFilter passes input through, but for the detach keys: when they are
// typed in sequence, Detached is closed and the input ends there. The
// first key typed twice is sent on once; a first key followed by anything
// else, or by nothing within the timeout, is sent on as typed.
type DetachFilter struct {
	keys    []byte
	timeout time.Duration
	pr      *io.PipeReader
	pw      *io.PipeWriter

	mu       sync.Mutex
	matched  int // keys typed so far
	gen      int // counts matches begun, so that a stale timer does nothing
	detached chan struct{}
	done     bool
}

// NewDetachFilter reads src in a goroutine of its own and returns the
// filter; with no keys, it only copies.
func NewDetachFilter(src io.Reader, keys []byte, timeout time.Duration) *DetachFilter {
	pr, pw := io.Pipe()
	f := &DetachFilter{keys: keys, timeout: timeout, pr: pr, pw: pw, detached: make(chan struct{})}
	go f.run(src)
	return f
}

// Read reads the filtered input.
func (f *DetachFilter) Read(p []byte) (int, error) { return f.pr.Read(p) }

// Detached is closed when the detach keys have been typed.
func (f *DetachFilter) Detached() <-chan struct{} { return f.detached }

func (f *DetachFilter) run(src io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		f.mu.Lock()
		out := f.feed(buf[:n])
		done := f.done
		f.mu.Unlock()
		if len(out) > 0 {
			f.pw.Write(out)
		}
		if done {
			// What came before the keys is passed on first: a detach
			// that closes the session's input at once keeps it. No
			// end-of-file after the keys: the session is left
			// running, and must not read one.
			close(f.detached)
			return
		}
		if err != nil {
			f.mu.Lock()
			pending := f.keys[:f.matched]
			f.matched = 0
			f.mu.Unlock()
			f.pw.Write(pending)
			f.pw.CloseWithError(err)
			return
		}
	}
}

// feed runs the bytes through the key matcher and returns what goes on.
// f.mu is held.
func (f *DetachFilter) feed(in []byte) []byte {
	if len(f.keys) == 0 {
		return append([]byte(nil), in...)
	}
	var out []byte
	for _, c := range in {
		if f.done {
			break
		}
	again:
		switch {
		case f.matched == 0 && c != f.keys[0]:
			out = append(out, c)
		case f.matched == 1 && c == f.keys[0] && len(f.keys) > 1:
			out = append(out, c) // the first key twice: once, as typed
			f.matched = 0
		case c == f.keys[f.matched]:
			f.matched++
			if f.matched == len(f.keys) {
				f.done = true // run closes f.detached
			}
		default: // a sequence broken off: what was held goes on
			out = append(out, f.keys[:f.matched]...)
			f.matched = 0
			goto again
		}
	}
	if f.matched > 0 && !f.done {
		f.gen++
		gen := f.gen
		time.AfterFunc(f.timeout, func() { f.expire(gen) })
	}
	return out
}

// expire sends on a first key that waited in vain for the rest.
func (f *DetachFilter) expire(gen int) {
	f.mu.Lock()
	if f.gen != gen || f.matched == 0 || f.done {
		f.mu.Unlock()
		return
	}
	pending := append([]byte(nil), f.keys[:f.matched]...)
	f.matched = 0
	f.mu.Unlock()
	f.pw.Write(pending)
}
