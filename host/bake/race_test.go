//go:build race

package bake

// raceEnabled: the race detector multiplies the memory a bake uses, so
// tests of its peak memory skip under it.
const raceEnabled = true
