// Command smolvm-standin is a test stand-in for smolvm's
// `smolvm machine exec` command line. smolvm cannot run on the test
// machines; this runs the command locally instead, keeping the behaviour
// cork relies on:
//
//   - the same flags: machine exec --name NAME [-i] [-t] [-e K=V]... [-w DIR] -- COMMAND [ARG...]
//   - stdout and stderr on separate pipes, relayed in chunks of at most 4 KiB
//   - the command's stdin closed when the stand-in's own stdin ends (-i),
//     empty without -i
//   - the command's exit status passed through (128+N for signal N)
//
// -t is accepted and ignored: smolvm 0.8.0 opened its PTY at 0x0, which is
// what cork's sessions exist to avoid. CORK_STANDIN_LOG, when set, names a
// file that gets one line per invocation, to count processes started.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"

	"github.com/spf13/pflag"
)

func main() {
	if len(os.Args) < 3 || os.Args[1] != "machine" || os.Args[2] != "exec" {
		fmt.Fprintln(os.Stderr, "smolvm-standin: only 'machine exec' is stood in for")
		os.Exit(2)
	}
	fs := pflag.NewFlagSet("machine exec", pflag.ContinueOnError)
	name := fs.String("name", "", "machine name")
	interactive := fs.BoolP("interactive", "i", false, "keep stdin open")
	fs.BoolP("tty", "t", false, "ignored")
	env := fs.StringArrayP("env", "e", nil, "K=V")
	dir := fs.StringP("workdir", "w", "", "working directory")
	fs.SetInterspersed(false)
	if err := fs.Parse(os.Args[3:]); err != nil || fs.NArg() == 0 || *name == "" {
		fmt.Fprintln(os.Stderr, "smolvm-standin: usage: machine exec --name NAME [-i] -- COMMAND [ARG...]")
		os.Exit(2)
	}
	if log := os.Getenv("CORK_STANDIN_LOG"); log != "" {
		if f, err := os.OpenFile(log, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600); err == nil {
			fmt.Fprintf(f, "%d %q\n", os.Getpid(), fs.Args())
			f.Close()
		}
	}

	cmd := exec.Command(fs.Arg(0), fs.Args()[1:]...)
	cmd.Env = append(os.Environ(), *env...)
	cmd.Dir = *dir
	stdout, _ := cmd.StdoutPipe()
	stderr, _ := cmd.StderrPipe()
	var stdin io.WriteCloser
	if *interactive {
		stdin, _ = cmd.StdinPipe()
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "smolvm-standin: %v\n", err)
		os.Exit(127)
	}
	if stdin != nil {
		go func() {
			io.Copy(stdin, os.Stdin)
			stdin.Close()
		}()
	}
	var wg sync.WaitGroup
	for _, p := range []struct {
		dst *os.File
		src io.Reader
	}{{os.Stdout, stdout}, {os.Stderr, stderr}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			relay(p.dst, p.src)
		}()
	}
	wg.Wait()
	err := cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			os.Exit(128 + int(ws.Signal()))
		}
		os.Exit(ee.ExitCode())
	}
}

// relay copies in chunks of at most 4 KiB, as smolvm's exec relay does.
func relay(dst io.Writer, src io.Reader) {
	buf := make([]byte, 4096)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
