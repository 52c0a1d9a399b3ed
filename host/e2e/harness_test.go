//go:build linux

// Package e2e runs the real binaries, cork and corkd, against each other:
// cork on a PTY that stands in for the operator's terminal, corkd on a unix
// socket or behind the smolvm stand-in.
package e2e

import (
	"crypto/md5"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corkvm/cork/host/e2e/termtest"
)

// bin holds the binaries TestMain builds.
var bin struct {
	dir, cork, corkd, corkdARM64, probe, standin string
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
	// An arm64 corkd, for baking multi-platform images.
	bin.corkdARM64 = filepath.Join(dir, "corkd-arm64")
	build = exec.Command("go", "build", "-o", bin.corkdARM64, "github.com/corkvm/cork/guest/cmd/corkd")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOARCH=arm64")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building corkd for arm64: %v\n%s", err, out)
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
	logs *termtest.Buffer
}

func startAgent(t *testing.T, args ...string) *agent {
	t.Helper()
	sock := filepath.Join(bin.dir, fmt.Sprintf("corkd-%d.sock", time.Now().UnixNano()))
	a := &agent{url: "unix://" + sock, logs: &termtest.Buffer{}}
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
	termtest.WaitFor(t, "corkd to listen", 10*time.Second, func() bool {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return a
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
