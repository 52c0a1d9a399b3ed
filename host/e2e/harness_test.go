// Package e2e runs the real binaries, cork and corkd, against each other:
// cork on a PTY that stands in for the operator's terminal, corkd on a unix
// socket or behind the smolvm stand-in.
package e2e

import (
	"bytes"
	"crypto/md5"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// bin holds the binaries TestMain builds.
var bin struct {
	dir, cork, corkd, probe, standin string
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cork-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// The sockets and binaries must be reachable by nobody, for the
	// peer-credential test.
	os.Chmod(dir, 0o755)
	bin.dir = dir
	bin.cork = filepath.Join(dir, "cork")
	bin.corkd = filepath.Join(dir, "corkd")
	bin.probe = filepath.Join(dir, "probe")
	bin.standin = filepath.Join(dir, "smolvm-standin")
	build := exec.Command("go", "build", "-o", dir+"/",
		"github.com/corkvm/cork/host/cmd/cork",
		"github.com/corkvm/cork/guest/cmd/corkd",
		"github.com/corkvm/cork/host/e2e/probe",
		"github.com/corkvm/cork/host/e2e/smolvm-standin")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building binaries: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// agent is a corkd process serving a unix socket.
type agent struct {
	url  string
	cmd  *exec.Cmd
	logs *syncBuffer
}

func startAgent(t *testing.T, args ...string) *agent {
	t.Helper()
	sock := filepath.Join(bin.dir, fmt.Sprintf("corkd-%d.sock", time.Now().UnixNano()))
	a := &agent{url: "unix://" + sock, logs: &syncBuffer{}}
	a.cmd = exec.Command(bin.corkd, append([]string{"serve", "--listen", a.url}, args...)...)
	a.cmd.Stderr = a.logs
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.cmd.Process.Kill()
		a.cmd.Wait()
		os.Remove(sock)
		if t.Failed() {
			t.Logf("corkd log:\n%s", a.logs.String())
		}
	})
	waitFor(t, "corkd to listen", 10*time.Second, func() bool {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return a
}

// terminal is a PTY pair standing in for the operator's terminal; the
// program under test runs on its slave as the foreground process.
type terminal struct {
	master *os.File
	out    *syncBuffer
	cmd    *exec.Cmd
	done   chan struct{}
	err    error
}

func startOnTerminal(t *testing.T, rows, cols uint16, name string, args ...string) *terminal {
	t.Helper()
	master, slave, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	setTermSize(t, master, rows, cols)
	tm := &terminal{master: master, out: &syncBuffer{}, done: make(chan struct{})}
	tm.cmd = exec.Command(name, args...)
	tm.cmd.Stdin, tm.cmd.Stdout, tm.cmd.Stderr = slave, slave, slave
	tm.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if err := tm.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		buf := make([]byte, 32<<10)
		for {
			n, err := master.Read(buf)
			tm.out.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	go func() {
		tm.err = tm.cmd.Wait()
		// Whatever the program wrote is readable until EIO.
		select {
		case <-readDone:
		case <-time.After(5 * time.Second):
		}
		close(tm.done)
	}()
	t.Cleanup(func() {
		tm.cmd.Process.Kill()
		<-tm.done
		master.Close()
		if t.Failed() {
			t.Logf("terminal output:\n%s", tm.out.String())
		}
	})
	return tm
}

func setTermSize(t *testing.T, master *os.File, rows, cols uint16) {
	t.Helper()
	if err := pty.Setsize(master, &pty.Winsize{Rows: rows, Cols: cols}); err != nil {
		t.Fatal(err)
	}
}

func (tm *terminal) write(t *testing.T, s string) {
	t.Helper()
	if _, err := tm.master.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
}

// wait waits for the program and returns its exit status.
func (tm *terminal) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-tm.done:
	case <-time.After(30 * time.Second):
		t.Fatal("program on the terminal did not exit")
	}
	return tm.cmd.ProcessState.ExitCode()
}

// waitLine waits for a line of output that satisfies ok.
func (tm *terminal) waitLine(t *testing.T, what string, ok func(string) bool) string {
	t.Helper()
	var found string
	waitFor(t, what, 20*time.Second, func() bool {
		for _, l := range lines(tm.out.String()) {
			if ok(l) {
				found = l
				return true
			}
		}
		return false
	})
	return found
}

func lines(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' })
}

// probeReports returns the probe's report lines of kind what ("winch",
// "size", "start") as "ROWS COLS".
func probeReports(out, what string) []string {
	var r []string
	for _, l := range lines(out) {
		f := strings.Fields(l)
		if len(f) == 4 && f[0] == what {
			r = append(r, f[1]+" "+f[2])
		}
	}
	return r
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func termios(t *testing.T, f *os.File) *unix.Termios {
	t.Helper()
	tio, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	return tio
}

func md5sum(b []byte) [16]byte { return md5.Sum(b) }
