//go:build !linux

package term

// Main runs run and returns its result.
func Main(run func() int) int { return run() }

// waitWinch reports false: os/signal alone serves WatchSize here.
func waitWinch(*sizeWatch, <-chan struct{}) bool { return false }
