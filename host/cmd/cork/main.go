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

// The main goroutine keeps the main thread, where term.Main waits for
// SIGWINCH.
func init() { runtime.LockOSThread() }

func main() {
	cli.Version = version
	os.Exit(term.Main(func() int { return cli.Main(os.Args[1:]) }))
}
