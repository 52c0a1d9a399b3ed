//go:build linux

package e2e

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
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
