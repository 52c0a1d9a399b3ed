// Command barerelay is the least an agent and a host client can be, for the
// benchmark's comparison only: one server process that runs a program and
// one client process that talks to it over a unix socket, relaying raw
// bytes and nothing else. No framing, no stderr, no exit status, no
// resize, no flow control, no users. Whatever cork does, its
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

// run is the client: it sends the request and relays stdin and stdout
// until the server closes the connection. The request is one line, "t" or
// "p", then the arguments, each after a tab: the benchmark's arguments
// hold neither tabs nor newlines, so no quoting is needed.
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
		copyBuffered(c, os.Stdin)
		c.(*net.UnixConn).CloseWrite()
	}()
	_, err = io.Copy(os.Stdout, c) // splices into a pipe
	return err
}

// copyBuffered copies src to dst with read and write of 128 KiB, and
// never with splice(2) or a ReadFrom/WriteTo of either side.
//
// Each direction of the pair moves its bytes the faster of the two ways
// measured on the benchmark's machine (2 GiB through a pair, five
// alternations): this way from a pipe into the socket (990-1241 MiB/s,
// against 701-925 with splice(2)), and splice(2) from the socket into a
// pipe, which io.Copy does between a unix socket and an *os.File.
func copyBuffered(dst io.Writer, src io.Reader) {
	io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, make([]byte, 128<<10))
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
	stdin, toProgram, err := os.Pipe()
	if err != nil {
		return
	}
	fromProgram, stdout, err := os.Pipe()
	if err != nil {
		stdin.Close()
		toProgram.Close()
		return
	}
	cmd.Stdin, cmd.Stdout = stdin, stdout
	err = cmd.Start()
	stdin.Close()
	stdout.Close()
	if err != nil {
		toProgram.Close()
		fromProgram.Close()
		return
	}
	go func() {
		// What the request line's reader holds, then the rest spliced
		// from the socket.
		buffered, _ := r.Peek(r.Buffered())
		toProgram.Write(buffered)
		io.Copy(toProgram, c)
		toProgram.Close()
	}()
	copyBuffered(c, fromProgram)
	fromProgram.Close()
	cmd.Wait()
}
