// Command forkresize reimplements, for the benchmark's comparison only, the
// workaround cork replaces: the session runs under `smolvm machine exec -it`
// on a guest PTY that starts at 0x0, and every host SIGWINCH forks
//
//	smolvm machine exec --name M -- sh -c 'stty -F <the session's pts> cols X rows Y'
//
// without waiting for the previous one, as the workaround did. It is not
// part of cork.
//
//	forkresize --smolvm PATH --name M -- COMMAND [ARG...]
//
// COMMAND must print "tty NAME" first (the probe does) so that the wrapper
// knows which pts to resize.
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

func main() { os.Exit(run()) }

func run() int {
	smolvm := pflag.String("smolvm", "smolvm", "the smolvm binary")
	name := pflag.String("name", "", "the machine")
	pflag.Parse()
	if pflag.NArg() == 0 || *name == "" {
		fmt.Fprintln(os.Stderr, "usage: forkresize --smolvm PATH --name M -- COMMAND [ARG...]")
		return 2
	}
	if st, err := term.MakeRaw(0); err == nil {
		defer term.Restore(0, st)
	}
	session := exec.Command(*smolvm, append([]string{"machine", "exec", "--name", *name, "-i", "-t", "--"}, pflag.Args()...)...)
	session.Stdin = os.Stdin
	out, _ := session.StdoutPipe()
	session.Stderr = os.Stderr
	if err := session.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 125
	}

	pts := make(chan string, 1)
	relayed := make(chan struct{})
	go func() {
		defer close(relayed)
		r := bufio.NewReader(out)
		first, err := r.ReadString('\n')
		os.Stdout.WriteString(first)
		if f := strings.Fields(first); len(f) == 2 && f[0] == "tty" {
			pts <- f[1]
		}
		if err == nil {
			io.Copy(os.Stdout, r)
		}
	}()

	winch := make(chan os.Signal, 64)
	signal.Notify(winch, syscall.SIGWINCH)
	go func() {
		dev := <-pts
		for range winch {
			ws, err := unix.IoctlGetWinsize(0, unix.TIOCGWINSZ)
			if err != nil {
				continue
			}
			script := fmt.Sprintf("stty -F %s cols %d rows %d", dev, ws.Col, ws.Row)
			c := exec.Command(*smolvm, "machine", "exec", "--name", *name, "--", "sh", "-c", script)
			if c.Start() == nil {
				go c.Wait() // concurrent, unordered: the workaround's flaw
			}
		}
	}()

	session.Wait()
	<-relayed
	if code := session.ProcessState.ExitCode(); code >= 0 {
		return code
	}
	return 255
}
