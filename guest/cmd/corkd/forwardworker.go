package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"

	"github.com/corkvm/cork/guest/agent"
)

// forwardWorker returns the command of corkd's forwarding workers
// (agent.Config.ForwardWorker): this same binary, by a descriptor opened
// now. An upgrade may have replaced the file since; exec through
// /proc/self/fd reaches the running binary either way. It returns nil
// when the binary cannot be opened: forwards are then served in corkd.
func forwardWorker(logLevel string, log *slog.Logger) func() *exec.Cmd {
	exe, err := os.Open("/proc/self/exe")
	if err != nil {
		log.Warn("forwarding is served in corkd: its binary cannot be opened for workers", "err", err)
		return nil
	}
	return func() *exec.Cmd {
		// The agent puts the connection, the job and the leases at
		// fds 3 to 5; the binary comes next.
		cmd := exec.Command("/proc/self/fd/6", "forward-worker", "--log-level", logLevel)
		cmd.Args[0] = "corkd"
		cmd.ExtraFiles = []*os.File{exe}
		cmd.Stderr = os.Stderr
		return cmd
	}
}

// runForwardWorker is corkd forward-worker, which only corkd starts: it
// serves the one forwarding connection it is handed.
func runForwardWorker(args []string) int {
	level := slog.LevelInfo
	if len(args) == 2 && args[0] == "--log-level" {
		if err := level.UnmarshalText([]byte(args[1])); err != nil {
			fmt.Fprintf(os.Stderr, "corkd forward-worker: --log-level %q: %v\n", args[1], err)
			return 2
		}
	}
	os.NewFile(6, "corkd").Close() // the binary it was started from
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("pid", strconv.Itoa(os.Getpid()))
	if err := agent.ServeForwardWorker(agent.Config{Logger: log}, os.Stdin); err != nil {
		log.Error("forwarding worker", "err", err)
		return 1
	}
	return 0
}
