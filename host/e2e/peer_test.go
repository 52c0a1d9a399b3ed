//go:build linux

package e2e

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"

	"github.com/corkvm/cork/host/e2e/termtest"
)

// TestPythonPeer runs a host written in Python from the protocol's package
// documentation alone (testdata/peer.py) against the real corkd: the spec
// must be enough to write a peer.
func TestPythonPeer(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("no python3")
	}
	a := startAgent(t)
	sock := strings.TrimPrefix(a.url, "unix://")
	cmd := exec.Command(python, "testdata/peer.py", sock, "from python's stdin\n",
		"sh", "-c", `cat; echo "env $FROM_PYTHON"; echo to-stderr >&2; exit 7`)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Run()
	if code := cmd.ProcessState.ExitCode(); code != 7 {
		t.Fatalf("exit %d, want 7; stderr %q", code, stderr.String())
	}
	if stdout.String() != "from python's stdin\nenv yes\n" || stderr.String() != "to-stderr\n" {
		t.Fatalf("stdout %q, stderr %q", stdout.String(), stderr.String())
	}
}

// TestPythonPeerAttaches: the Python host, from the spec alone, attaches to
// a kept session cork started and detached from, sees the program's redraw,
// types a line and ends with the program's status.
func TestPythonPeerAttaches(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("no python3")
	}
	a := startAgent(t)
	tm := termtest.Start(t, 24, 80, bin.Cork, corkExec(a, "-it", "--keep", "--name", "py", "--",
		"sh", "-c", `trap 'echo redrawn' WINCH; echo ready; until read x; do :; done; echo "read $x"; exit 4`)...)
	tm.WaitLine(t, "ready", func(l string) bool { return l == "ready" })
	tm.Write(t, "\x00\x11")
	tm.Wait(t)
	cmd := exec.Command(python, "testdata/peer.py", "--attach", strings.TrimPrefix(a.url, "unix://"), "py", "redrawn", "from python\r")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Run()
	if code := cmd.ProcessState.ExitCode(); code != 4 || !strings.Contains(stdout.String(), "read from python") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
	}
}
