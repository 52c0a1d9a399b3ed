//go:build linux

package e2e

import (
	"errors"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corkvm/cork/host/e2e/harness"
	"github.com/corkvm/cork/host/e2e/termtest"
)

// TestSIGTERMHangsUpSessions: corkd stopped with SIGTERM hangs up every
// session before it exits: a pipe session, a PTY session and a kept one
// each end with their programs' whole process groups, and each cork is
// told the program's end (exit 129, hung up). corkd used to close its
// listeners and return, leaving the programs running and the clients with
// a dropped connection.
func TestSIGTERMHangsUpSessions(t *testing.T) {
	a := startAgent(t, "--disconnect-grace", "300ms")
	script := "sleep 600 & echo started; wait"
	var corks []*exec.Cmd
	for _, flags := range [][]string{nil, {"-t"}, {"-t", "--keep", "--name", "kept"}} {
		args := append(flags, "--", "sh", "-c", script)
		cmd := exec.Command(bin.Cork, corkExec(a, args...)...)
		out := &harness.Buffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill() })
		termtest.WaitFor(t, "session "+strings.Join(flags, " ")+" to start", 10*time.Second, func() bool {
			return strings.Contains(out.String(), "started")
		})
		corks = append(corks, cmd)
	}
	pids := descendants(a.cmd.Process.Pid)
	if len(pids) < 6 {
		t.Fatalf("want a shell and a sleep per session under corkd, found %v", pids)
	}

	a.cmd.Process.Signal(syscall.SIGTERM)
	for i, cmd := range corks {
		err := cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 129 {
			t.Errorf("cork %d: %v, want exit status 129 (the program hung up)", i, err)
		}
	}
	select {
	case <-a.Exited():
	case <-time.After(20 * time.Second):
		t.Fatal("corkd still runs 20s after SIGTERM")
	}
	for _, p := range pids {
		if alive(p) {
			t.Errorf("process %d of a session outlived corkd", p)
		}
	}
}
