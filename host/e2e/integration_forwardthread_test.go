//go:build linux

package e2e

import (
	"net"
	"os"
	"os/exec"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corkvm/cork/host/client"
	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/prototest"
)

// TestForwardUserCannotKillCorkd: corkd (root) dials a forward's streams
// on a thread that took the user's uids, and keeps that thread while the
// connection lasts and 5s after its last dial. kill(2) given a thread id
// signals the whole process and is allowed when the sender's uid is that
// thread's real or saved uid, so any program of the user's in the guest
// can find the thread in /proc/<pid>/task and SIGKILL corkd, ending every
// user's sessions. Fails on main.
func TestForwardUserCannotKillCorkd(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: corkd dials as a user the test makes")
	}
	name := "corkx" + strconv.Itoa(os.Getpid()%100000)
	if out, err := exec.Command("useradd", "-M", "-d", "/", "-s", "/bin/sh", name).CombinedOutput(); err != nil {
		t.Skipf("useradd: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("userdel", "-f", name).Run() })
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)

	a := startAgent(t)
	l, port := listenTCP(t)
	prototest.Serve(t, l, counter)
	c, err := net.Dial("unix", a.Sock)
	if err != nil {
		t.Fatal(err)
	}
	fw, err := client.Forward(c, "test", name)
	if err != nil {
		t.Fatal(err)
	}
	defer fw.Close()
	s, err := fw.Dial(protocol.NetTCP, "127.0.0.1:"+port)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()

	pid := a.cmd.Process.Pid
	tid := threadOf(t, pid, u.Uid)
	if tid == "" {
		return // no thread of corkd's is the user's: nothing to signal
	}
	kill := exec.Command("kill", "-KILL", tid) // what any program of the user's may run
	kill.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	out, err := kill.CombinedOutput()
	select {
	case <-a.Exited():
		t.Fatalf("%s killed corkd (pid %d) with kill -KILL %s, its user thread", name, pid, tid)
	case <-time.After(2 * time.Second):
		t.Logf("kill -KILL %s as %s: %v %s", tid, name, err, out)
	}
}

// threadOf returns the id of a thread of process pid that has uid among
// its uids, or "".
func threadOf(t *testing.T, pid int, uid string) string {
	t.Helper()
	dir := "/proc/" + strconv.Itoa(pid) + "/task/"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range tasks {
		b, _ := os.ReadFile(dir + e.Name() + "/status")
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) == 5 && f[0] == "Uid:" && slices.Contains(f[1:], uid) {
				return e.Name()
			}
		}
	}
	return ""
}
