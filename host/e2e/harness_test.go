//go:build linux

// Package e2e runs the real binaries, cork and corkd, against each other:
// cork on a PTY that stands in for the operator's terminal, corkd on a unix
// socket or behind the smolvm stand-in.
package e2e

import (
	"crypto/md5"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corkvm/cork/host/e2e/harness"
	"github.com/corkvm/cork/host/e2e/termtest"
)

// bin holds the binaries TestMain builds.
var bin *harness.Binaries

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cork-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// The sockets and binaries must be reachable by nobody, for the
	// peer-credential test.
	os.Chmod(dir, 0o755)
	if bin, err = harness.Build(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// agent is a corkd serving a unix socket, its log kept for the test.
type agent struct {
	*harness.Agent
	url  string
	cmd  *exec.Cmd
	logs *harness.Buffer
}

func startAgent(t *testing.T, args ...string) *agent {
	t.Helper()
	return startAgentAt(t, filepath.Join(bin.Dir, fmt.Sprintf("corkd-%d.sock", time.Now().UnixNano())), args...)
}

// startAgentAt starts corkd on the unix socket sock.
func startAgentAt(t *testing.T, sock string, args ...string) *agent {
	t.Helper()
	logs := &harness.Buffer{}
	ha, err := harness.StartAgent(bin.Corkd, sock, logs, args...)
	if err != nil {
		t.Fatalf("%v; log:\n%s", err, logs.String())
	}
	a := &agent{Agent: ha, url: ha.URL, cmd: ha.Cmd, logs: logs}
	t.Cleanup(func() {
		ws := workers(a.cmd.Process.Pid)
		a.Stop()
		// Its forwarding workers end once they see corkd gone; the
		// test's users are removed after, and must be free of them.
		for _, w := range ws {
			termtest.WaitFor(t, "corkd's forwarding worker to end with it", 10*time.Second, func() bool { return !alive(w) })
		}
		if t.Failed() {
			t.Logf("corkd log:\n%s", a.logs.String())
		}
	})
	return a
}

// needTools skips the test, naming what to install, where one of tools is
// not installed.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (apt-get install %s)", tool, tool)
		}
	}
}

// exitsWithin waits for cmd, started, to exit and reports whether it did
// within d; past d it kills cmd, and waits for that.
func exitsWithin(cmd *exec.Cmd, d time.Duration) bool {
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		cmd.Process.Kill()
		<-done
		return false
	}
}

// waitOrKill waits for cmd to exit, and fails the test, killing it, when
// it has not within d.
func waitOrKill(t *testing.T, cmd *exec.Cmd, d time.Duration) {
	t.Helper()
	if !exitsWithin(cmd, d) {
		t.Fatalf("%v did not exit within %v", cmd.Args, d)
	}
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
