// Command probe runs inside cork sessions in tests and benchmarks. It
// reports its terminal's size at start and on every SIGWINCH, each line
// stamped with CLOCK_MONOTONIC (shared by every process on the machine):
//
//	tty NAME                 (the terminal's device, first)
//	start ROWS COLS NANOS
//	winch ROWS COLS NANOS
//	size ROWS COLS NANOS     (answer to a "?" line on stdin)
//
// A "q" line on stdin, or stdin's end, makes it exit 0.
package main

import (
	"bufio"
	"fmt"
	"os"
	"os/signal"
	"sync"

	"golang.org/x/sys/unix"
)

var mu sync.Mutex

func report(what string) {
	ws, err := unix.IoctlGetWinsize(0, unix.TIOCGWINSZ)
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	mu.Lock()
	defer mu.Unlock()
	if err != nil {
		fmt.Printf("%s error %v %d\n", what, err, ts.Nano())
		return
	}
	fmt.Printf("%s %d %d %d\n", what, ws.Row, ws.Col, ts.Nano())
}

func main() {
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, unix.SIGWINCH)
	if name, err := os.Readlink("/proc/self/fd/0"); err == nil {
		fmt.Printf("tty %s\n", name)
	}
	report("start")
	go func() {
		for range winch {
			report("winch")
		}
	}()
	s := bufio.NewScanner(os.Stdin)
	for s.Scan() {
		switch s.Text() {
		case "?":
			report("size")
		case "q":
			return
		}
	}
}
