//go:build linux

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// listenerPy listens at argv[1] as another user would in the keeper's
// place, and appends every byte it receives to argv[2].
const listenerPy = `
import os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o666)
s.listen(16)
print("listening", flush=True)
while True:
    c, _ = s.accept()
    with open(sys.argv[2], "ab") as f:
        while True:
            b = c.recv(65536)
            if not b:
                break
            f.write(b)
            f.flush()
    c.close()
`

// TestKeeperHijackRefused: another user made /tmp/corkd-UID first, world
// writable, and listens at kept.sock in it. The victim's cork exec --keep
// through the smolvm stand-in is refused with a message naming that user,
// and the listener receives nothing: no Exec, no environment.
func TestKeeperHijackRefused(t *testing.T) {
	// The listener runs as another user: root's python (a pyenv shim,
	// say) may be out of its reach, the system's is not.
	python := "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		t.Skip("no /usr/bin/python3 (apt-get install python3)")
	}
	victim, attacker := newTestUser(t), newTestUser(t)
	dir := fmt.Sprintf("/tmp/corkd-%d", victim.uid)
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o777)
	os.Chown(dir, attacker.uid, attacker.gid)
	got := filepath.Join(attacker.home, "got")

	l := exec.Command(python, "-c", listenerPy, filepath.Join(dir, "kept.sock"), got)
	l.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(attacker.uid), Gid: uint32(attacker.gid)}}
	out, err := l.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Process.Kill(); l.Wait() })
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "listening\n" {
		t.Fatalf("listener as %s: %q", attacker.name, line)
	}

	// Before a fix the session went to the listener, which never answers:
	// cork would wait for it forever.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin.Cork, machineExec("-t", "-e", "API_KEY=s3cret", "--keep", "--", "sh", "-c", "echo ran")...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: &syscall.Credential{Uid: uint32(victim.uid), Gid: uint32(victim.gid)}}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) } // the stand-in and its corkd too
	cmd.WaitDelay = 5 * time.Second
	b, _ := cmd.CombinedOutput()
	res, code := string(b), cmd.ProcessState.ExitCode()
	owner := "belongs to uid " + strconv.Itoa(attacker.uid) + " (" + attacker.name + ")"
	if code == 0 || strings.Contains(res, "ran") || !strings.Contains(res, owner) {
		t.Errorf("cork exec --keep as %s: exit %d, %q; want a refusal naming %q", victim.name, code, res, owner)
	}
	if b, err := os.ReadFile(got); err == nil {
		t.Errorf("the other user's listener received %d bytes: %q", len(b), b)
	}
}
