// Command cork opens interactive sessions in a microVM through corkd, the
// way docker exec -it does in a container.
package main

import (
	"os"

	"github.com/corkvm/cork/host/cli"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	cli.Version = version
	os.Exit(cli.Main(os.Args[1:]))
}
