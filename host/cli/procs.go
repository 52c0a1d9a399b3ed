package cli

import (
	"os"
	"runtime"
)

// relayOnOneP runs cork's goroutines on one P unless GOMAXPROCS says
// otherwise. cork forward's goroutines hand each connection's bytes to one
// another at every hop; with a second P, each hand-off wakes another thread
// to take it, which costs a connection's set-up more than the second CPU
// gives the relay (docs/benchmarks.md, "Forwarding"). A relay blocked in a
// system call gives its P up, so one P still carries streams side by side.
func relayOnOneP() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
}
