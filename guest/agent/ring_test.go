package agent

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

func TestRingKeepsTheLastBytes(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, max := range []int{1, 7, 64, 1000} {
		r := newRing(max)
		var all []byte
		for range 500 {
			p := make([]byte, rng.IntN(3*max))
			for i := range p {
				p[i] = byte(rng.Uint32())
			}
			r.write(p)
			all = append(all, p...)
			end := uint64(len(all))
			if r.end != end || r.start != end-uint64(min(len(all), max)) {
				t.Fatalf("max %d: ring holds [%d,%d), want [%d,%d)", max, r.start, r.end, end-uint64(min(len(all), max)), end)
			}
			// Every offset inside gives exactly the bytes from there on.
			for _, from := range []uint64{r.start, (r.start + r.end) / 2, r.end} {
				a, b, ok := r.since(from)
				if got := append(append([]byte{}, a...), b...); !ok || !bytes.Equal(got, all[from:]) {
					t.Fatalf("max %d: since(%d) = %d bytes, %v; want %d", max, from, len(got), ok, len(all[from:]))
				}
			}
			if r.start > 0 {
				if _, _, ok := r.since(r.start - 1); ok {
					t.Fatalf("max %d: since(%d) succeeded for a dropped byte", max, r.start-1)
				}
			}
			if _, _, ok := r.since(r.end + 1); ok {
				t.Fatalf("max %d: since(%d) succeeded for a byte from the future", max, r.end+1)
			}
		}
		if len(r.buf) > max {
			t.Fatalf("max %d: the ring grew to %d", max, len(r.buf))
		}
	}
}
