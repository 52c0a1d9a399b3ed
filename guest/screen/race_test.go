//go:build race

package screen

// slowdown is how much slower the emulator runs in this test binary: the
// race detector instruments every memory access of it, about tenfold.
const slowdown = 10
