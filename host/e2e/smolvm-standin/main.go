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
// With -t the command runs on a new PTY that is never sized, so it starts at
// 0x0 and stays there, as smolvm 0.8.0's did; only the benchmark's
// fork-per-resize row uses that. CORK_STANDIN_LOG, when set, names a file
// that gets one line per invocation, to count processes started.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"

	"github.com/creack/pty"
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
	tty := fs.BoolP("tty", "t", false, "run the command on a PTY of 0x0")
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
	if *tty {
		os.Exit(runOnPTY(cmd, *interactive))
	}
	// The relay's own ends of the pipes are blocking, as a native relay's
	// are. Through Go's poller, with this process's other goroutines
	// blocked in reads of its stdin and in wait4, output became ready
	// unnoticed until the runtime's monitor polled, up to 10 ms later:
	// pipe input through the stand-in ran at a sixth of the speed of a
	// direct pipe, a stall that belongs to this stand-in, not to smolvm.
	stdout, stdoutW := blockingPipe()
	stderr, stderrW := blockingPipe()
	cmd.Stdout, cmd.Stderr = stdoutW, stderrW
	var stdin *os.File
	if *interactive {
		var stdinR *os.File
		stdinR, stdin = blockingPipe()
		cmd.Stdin = stdinR
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "smolvm-standin: %v\n", err)
		os.Exit(127)
	}
	stdoutW.Close()
	stderrW.Close()
	if cmd.Stdin != nil {
		cmd.Stdin.(*os.File).Close()
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

// runOnPTY runs cmd on a PTY created at 0x0 and relays it until cmd exits.
func runOnPTY(cmd *exec.Cmd, interactive bool) int {
	master, slave, err := pty.Open()
	if err != nil {
		fmt.Fprintf(os.Stderr, "smolvm-standin: %v\n", err)
		return 1
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "smolvm-standin: %v\n", err)
		return 127
	}
	slave.Close()
	if interactive {
		go relay(master, os.Stdin)
	}
	done := make(chan struct{})
	go func() {
		relay(os.Stdout, master) // until EIO: every slave closed
		close(done)
	}()
	cmd.Wait()
	<-done
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// blockingPipe returns a pipe whose ends are in blocking mode (Fd puts an
// os.File there), read and written by threads rather than Go's poller.
func blockingPipe() (r, w *os.File) {
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(os.Stderr, "smolvm-standin: %v\n", err)
		os.Exit(1)
	}
	r.Fd()
	w.Fd()
	return r, w
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
