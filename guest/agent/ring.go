package agent

// ring keeps the last bytes of a kept session's output, numbered from the
// session's start, so that a host that lost its connection for a moment
// gets exactly the bytes it missed. It holds at most its capacity; older
// bytes are dropped. It grows as output comes, so a quiet session costs
// little.
type ring struct {
	buf   []byte
	max   int
	head  int    // index in buf of the oldest byte, once buf is full
	start uint64 // the number of the oldest byte held
	end   uint64 // the number of the next byte to come
}

func newRing(max int) *ring { return &ring{max: max} }

func (r *ring) write(p []byte) {
	r.end += uint64(len(p))
	if len(p) >= r.max {
		p = p[len(p)-r.max:]
		r.buf = append(r.buf[:0], p...)
		r.head = 0
		r.start = r.end - uint64(len(p))
		return
	}
	if room := r.max - len(r.buf); room > 0 {
		n := min(room, len(p))
		r.buf = append(r.buf, p[:n]...)
		p = p[n:]
	}
	for len(p) > 0 { // full: overwrite the oldest
		n := copy(r.buf[r.head:], p)
		p = p[n:]
		r.head = (r.head + n) % len(r.buf)
	}
	r.start = r.end - uint64(len(r.buf))
}

// since returns the bytes from number from on, in at most two pieces, or
// false when from is no longer held (or not yet written).
func (r *ring) since(from uint64) ([]byte, []byte, bool) {
	if from < r.start || from > r.end {
		return nil, nil, false
	}
	skip := int(from - r.start)
	a, b := r.buf[r.head:], r.buf[:r.head]
	if skip < len(a) {
		return a[skip:], b, true
	}
	return b[skip-len(a):], nil, true
}
