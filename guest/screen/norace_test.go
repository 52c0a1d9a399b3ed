//go:build !race

package screen

// slowdown is how much slower the emulator runs in this test binary.
const slowdown = 1
