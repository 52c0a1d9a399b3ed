// Command barerelay is the least an agent and a host client can be, for the
// benchmark's comparison only: one server process that runs a program and
// one client process that talks to it over a unix socket, relaying raw
// bytes with io.Copy and nothing else. No framing, no stderr, no exit
// status, no resize, no flow control, no users. Whatever cork does, its
// bytes cross the same two processes; what this pair reaches is the most
// any design with an agent and a client on the path can reach here.
//
//	barerelay serve SOCKET
//	barerelay [-t] SOCKET -- COMMAND [ARG...]
//
// -t runs the program on a PTY and puts the client's terminal in raw
// mode, as cork exec -t does. It is not part of cork.
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"

	"github.com/creack/pty"
	"golang.org/x/term"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "serve" {
		fail(serve(os.Args[2]))
		return
	}
	args, tty := os.Args[1:], false
	if len(args) > 0 && args[0] == "-t" {
		args, tty = args[1:], true
	}
	if len(args) < 3 || args[1] != "--" {
		fail(fmt.Errorf("usage: barerelay serve SOCKET | barerelay [-t] SOCKET -- COMMAND [ARG...]"))
	}
	fail(run(args[0], tty, args[2:]))
}

func fail(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "barerelay:", err)
		os.Exit(1)
	}
}

// The request is one line: "t" or "p", then the arguments, each after a
// tab (the benchmark's arguments hold neither tabs nor newlines).
func run(sock string, tty bool, argv []string) error {
	c, err := net.Dial("unix", sock)
	if err != nil {
		return err
	}
	mode := "p"
	if tty {
		mode = "t"
		if term.IsTerminal(0) {
			old, err := term.MakeRaw(0)
			if err != nil {
				return err
			}
			defer term.Restore(0, old)
		}
	}
	if _, err := fmt.Fprintf(c, "%s\t%s\n", mode, strings.Join(argv, "\t")); err != nil {
		return err
	}
	go func() {
		io.Copy(c, os.Stdin)
		c.(*net.UnixConn).CloseWrite()
	}()
	_, err = io.Copy(os.Stdout, c)
	return err
}

func serve(sock string) error {
	os.Remove(sock)
	l, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go session(c.(*net.UnixConn))
	}
}

func session(c *net.UnixConn) {
	defer c.Close()
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return
	}
	f := strings.Split(strings.TrimSuffix(line, "\n"), "\t")
	if len(f) < 2 {
		return
	}
	cmd := exec.Command(f[1], f[2:]...)
	if f[0] == "t" {
		master, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 24, Cols: 80})
		if err != nil {
			return
		}
		go io.Copy(master, r)
		io.Copy(c, master) // until EIO: every slave is closed
		master.Close()
		cmd.Wait()
		return
	}
	cmd.Stdin = r
	cmd.Stdout = c
	cmd.Run()
}
