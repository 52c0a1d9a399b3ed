package transport

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"sync"
	"time"
)

// DefaultAgent is where images keep corkd.
const DefaultAgent = "/usr/local/bin/corkd"

// Machine runs corkd in a smolvm machine through `smolvm machine exec` and
// speaks the protocol in-band over its stdin and stdout. It works with every
// smolvm version and needs nothing exposed from the guest.
type Machine struct {
	Smolvm string    // the smolvm binary
	Name   string    // the machine
	Agent  string    // corkd's path in the guest; empty: DefaultAgent
	Stderr io.Writer // smolvm's and corkd's diagnostics
}

// Args returns the smolvm command line.
func (m *Machine) Args() []string {
	agent := m.Agent
	if agent == "" {
		agent = DefaultAgent
	}
	return []string{m.Smolvm, "machine", "exec", "--name", m.Name, "-i", "--", agent, "serve", "--stdio"}
}

// Dial starts smolvm. The returned stream's Close ends it.
func (m *Machine) Dial(ctx context.Context) (*MachineConn, error) {
	args := m.Args()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stderr = m.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", args[0], err)
	}
	return &MachineConn{cmd: cmd, stdin: stdin, stdout: stdout}, nil
}

// MachineConn is the smolvm process's stdout and stdin as one stream. Its
// stdin stays open for the whole session: smolvm closes corkd's stdin when
// its own ends, so the user's stdin EOF travels as a frame instead.
type MachineConn struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout io.ReadCloser

	once sync.Once
	err  error
}

func (c *MachineConn) Read(p []byte) (int, error)  { return c.stdout.Read(p) }
func (c *MachineConn) Write(p []byte) (int, error) { return c.stdin.Write(p) }

// machineExitWait is how long Close lets smolvm finish after its stdin
// closes before killing it.
const machineExitWait = 3 * time.Second

// Close ends the stream and waits for smolvm; it returns smolvm's failure,
// if it failed.
func (c *MachineConn) Close() error {
	c.once.Do(func() {
		c.stdin.Close()
		done := make(chan error, 1)
		go func() { done <- c.cmd.Wait() }()
		select {
		case c.err = <-done:
		case <-time.After(machineExitWait):
			c.cmd.Process.Kill()
			c.err = <-done
		}
		if c.err != nil {
			c.err = fmt.Errorf("%s machine exec: %w", c.cmd.Path, c.err)
		}
	})
	return c.err
}
