//go:build linux

// Package termtest runs a program on a PTY that stands in for the
// operator's terminal, for tests: the program is the terminal's session
// leader and foreground process, as cork is in a real terminal, and the test
// holds the master to type, resize and read the screen.
package termtest

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corkvm/cork/host/e2e/harness"
	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// Terminal is a program running on a PTY the test owns.
type Terminal struct {
	Master *os.File
	Out    *harness.Buffer
	// Initial is the terminal's mode before the program started.
	Initial  *unix.Termios
	cmd      *exec.Cmd
	readDone chan struct{} // the output is read to its end
	done     chan struct{} // and the program has exited
}

// Options for Open.
type Options struct {
	Rows, Cols uint16
	Env        []string            // added to the test's environment
	SetModes   func(*unix.Termios) // changes the terminal's modes first, as stty would
	// OnLine, when set, is called with each line of output as it is
	// read, without its line ending, from one goroutine.
	OnLine func(line string)
	// Stdin, when set, is the program's input instead of the terminal.
	Stdin *os.File
}

// Open runs name on a new terminal; Close ends it. For tests, Start.
func Open(o Options, name string, args ...string) (*Terminal, error) {
	master, slave, err := pty.Open()
	if err != nil {
		return nil, err
	}
	defer slave.Close()
	fail := func(err error) (*Terminal, error) { master.Close(); return nil, err }
	if err := pty.Setsize(master, &pty.Winsize{Rows: o.Rows, Cols: o.Cols}); err != nil {
		return fail(err)
	}
	if o.SetModes != nil {
		tio, err := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
		if err != nil {
			return fail(err)
		}
		o.SetModes(tio)
		if err := unix.IoctlSetTermios(int(slave.Fd()), unix.TCSETS, tio); err != nil {
			return fail(err)
		}
	}
	tm := &Terminal{Master: master, Out: &harness.Buffer{}, readDone: make(chan struct{}), done: make(chan struct{})}
	if tm.Initial, err = unix.IoctlGetTermios(int(master.Fd()), unix.TCGETS); err != nil {
		return fail(err)
	}
	tm.cmd = exec.Command(name, args...)
	tm.cmd.Env = append(os.Environ(), o.Env...)
	tm.cmd.Stdin, tm.cmd.Stdout, tm.cmd.Stderr = slave, slave, slave
	tm.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if o.Stdin != nil {
		tm.cmd.Stdin = o.Stdin
		tm.cmd.SysProcAttr.Ctty = 1 // the terminal is stdout's
	}
	if err := tm.cmd.Start(); err != nil {
		return fail(err)
	}
	go tm.read(o.OnLine)
	go func() {
		tm.cmd.Wait()
		// What the program wrote stays readable until EIO.
		select {
		case <-tm.readDone:
		case <-time.After(5 * time.Second):
		}
		close(tm.done)
	}()
	return tm, nil
}

func (tm *Terminal) read(onLine func(string)) {
	defer close(tm.readDone)
	buf := make([]byte, 32<<10)
	var line []byte
	for {
		n, err := tm.Master.Read(buf)
		tm.Out.Write(buf[:n])
		if onLine != nil {
			for _, c := range buf[:n] {
				switch c {
				case '\n':
					onLine(string(line))
					line = line[:0]
				case '\r':
				default:
					line = append(line, c)
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// ReadDone is closed when the terminal's output has been read to its end:
// OnLine is called no more.
func (tm *Terminal) ReadDone() <-chan struct{} { return tm.readDone }

// Close kills the program if it still runs and closes the terminal.
func (tm *Terminal) Close() {
	tm.cmd.Process.Kill()
	<-tm.done
	tm.Master.Close()
}

// Start runs name on a new terminal of rows x cols, closed when the test
// ends; a failed test logs what the terminal showed.
func Start(t testing.TB, rows, cols uint16, name string, args ...string) *Terminal {
	t.Helper()
	return StartWithModes(t, rows, cols, nil, name, args...)
}

// StartWithModes is Start on a terminal whose modes setModes changes
// first, as an operator's stty settings would.
func StartWithModes(t testing.TB, rows, cols uint16, setModes func(*unix.Termios), name string, args ...string) *Terminal {
	t.Helper()
	tm, err := Open(Options{Rows: rows, Cols: cols, SetModes: setModes}, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		tm.Close()
		if t.Failed() {
			t.Logf("terminal output:\n%s", tm.Out.String())
		}
	})
	return tm
}

// Pid is the program's process id.
func (tm *Terminal) Pid() int { return tm.cmd.Process.Pid }

// SetSize resizes the terminal; the kernel signals the program.
func (tm *Terminal) SetSize(t testing.TB, rows, cols uint16) {
	t.Helper()
	if err := pty.Setsize(tm.Master, &pty.Winsize{Rows: rows, Cols: cols}); err != nil {
		t.Fatal(err)
	}
}

// Write types s.
func (tm *Terminal) Write(t testing.TB, s string) {
	t.Helper()
	if _, err := tm.Master.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
}

// Wait waits for the program to exit and returns its status.
func (tm *Terminal) Wait(t testing.TB) int {
	t.Helper()
	select {
	case <-tm.done:
	case <-time.After(60 * time.Second):
		t.Fatal("the program on the terminal did not exit")
	}
	return tm.cmd.ProcessState.ExitCode()
}

// WaitLine waits for a line of output that satisfies ok and returns it.
func (tm *Terminal) WaitLine(t testing.TB, what string, ok func(string) bool) string {
	t.Helper()
	var found string
	WaitFor(t, what, 30*time.Second, func() bool {
		for _, l := range Lines(tm.Out.String()) {
			if ok(l) {
				found = l
				return true
			}
		}
		return false
	})
	return found
}

// Lines splits terminal output into lines, dropping the \r a terminal adds.
func Lines(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' })
}

// ProbeReports returns the probe's report lines of one kind ("start",
// "winch", "size") as "ROWS COLS".
func ProbeReports(out, kind string) []string {
	var r []string
	for _, l := range Lines(out) {
		f := strings.Fields(l)
		if len(f) == 4 && f[0] == kind {
			r = append(r, f[1]+" "+f[2])
		}
	}
	return r
}

// WaitFor polls cond until it holds, failing the test after timeout.
func WaitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
