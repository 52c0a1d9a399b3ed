// Command cork opens interactive sessions in a microVM through corkd, the
// way docker exec -it does in a container.
package main

import (
	"os"
	"runtime"

	"github.com/corkvm/cork/host/cli"
	"github.com/corkvm/cork/host/term"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// init locks the main goroutine to the main thread before main runs: the
// kernel gives a resize's SIGWINCH to the main thread first, and term.Main
// waits for it there.
func init() { runtime.LockOSThread() }

func main() {
	cli.Version = version
	os.Exit(term.Main(func() int { return cli.Main(os.Args[1:]) }))
}
