//go:build linux

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corkvm/cork/host/e2e/termtest"
)

// Who may run sessions as whom on a unix socket: a uid admitted with
// --allow-uid runs only as itself; --allow-uid-as-any trusts it fully.

// testUser is a user the test creates, with a home of its own and a second
// group, and removes again.
type testUser struct {
	name, group string
	uid, gid    int
	groupGID    int
	home        string
}

func newTestUser(t *testing.T) *testUser {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create users")
	}
	if _, err := exec.LookPath("useradd"); err != nil {
		t.Skip("no useradd")
	}
	suffix := strconv.Itoa(os.Getpid()%10000) + strconv.Itoa(int(time.Now().UnixNano()%1000))
	u := &testUser{name: "corku" + suffix, group: "corkg" + suffix}
	home, err := os.MkdirTemp("", "corkhome")
	if err != nil {
		t.Fatal(err)
	}
	u.home = home
	t.Cleanup(func() { os.RemoveAll(home) })
	mustRun(t, "groupadd", u.group)
	t.Cleanup(func() { exec.Command("groupdel", u.group).Run() })
	mustRun(t, "useradd", "-M", "-d", home, "-s", "/bin/sh", "-G", u.group, u.name)
	t.Cleanup(func() { removeUser(u.name) })
	u.uid, _ = strconv.Atoi(strings.TrimSpace(mustOutput(t, "id", "-u", u.name)))
	u.gid, _ = strconv.Atoi(strings.TrimSpace(mustOutput(t, "id", "-g", u.name)))
	u.groupGID, _ = strconv.Atoi(groupID(t, u.group))
	os.Chown(home, u.uid, u.gid)
	os.Chmod(home, 0o755)
	return u
}

// removeUser deletes a user the test made. A process of the user's may
// still be ending (a program hung up with corkd, a forwarding worker's
// thread that has the user's identity): userdel refuses while one runs,
// so it is tried again for a while, then forced.
func removeUser(name string) {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if exec.Command("userdel", name).Run() == nil {
			return
		}
	}
	exec.Command("userdel", "-f", name).Run()
}

func groupID(t *testing.T, name string) string {
	f := strings.Split(strings.TrimSpace(mustOutput(t, "getent", "group", name)), ":")
	if len(f) < 3 {
		t.Fatalf("getent group %s: %v", name, f)
	}
	return f[2]
}

func mustRun(t *testing.T, name string, args ...string) { mustOutput(t, name, args...) }

func mustOutput(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// corkAs runs cork as uid:gid (and its groups) and returns its combined
// output and exit status.
func corkAs(uid, gid int, groups []uint32, args ...string) (string, int) {
	cmd := exec.Command(bin.Cork, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: groups}}
	out, _ := cmd.CombinedOutput()
	return string(out), cmd.ProcessState.ExitCode()
}

func (a *agent) sock() string { return strings.TrimPrefix(a.url, "unix://") }

func TestAllowedUIDRunsAsItself(t *testing.T) {
	u := newTestUser(t)
	a := startAgent(t, "--allow-uid", strconv.Itoa(u.uid))

	// The socket is the admitted uid's, mode 0600: it can connect with
	// no chmod, nobody else can.
	st, err := os.Stat(a.sock())
	if err != nil {
		t.Fatal(err)
	}
	if sys := st.Sys().(*syscall.Stat_t); st.Mode().Perm() != 0o600 || int(sys.Uid) != u.uid {
		t.Fatalf("socket mode %v owner %d, want 0600 owned by %d", st.Mode().Perm(), sys.Uid, u.uid)
	}

	as := func(args ...string) (string, int) {
		return corkAs(u.uid, u.gid, []uint32{uint32(u.gid), uint32(u.groupGID)}, corkExec(a, args...)...)
	}
	out, code := as("--", "sh", "-c", `echo "$(id -u) $(id -g) $(id -G) $HOME $USER"; pwd`)
	want := strconv.Itoa(u.uid) + " " + strconv.Itoa(u.gid) + " " + strconv.Itoa(u.gid) + " " + strconv.Itoa(u.groupGID) + " " + u.home + " " + u.name + "\n" + u.home + "\n"
	if code != 0 || out != want {
		t.Fatalf("session of an admitted uid without -u: exit %d, %q; want %q", code, out, want)
	}
	if out, code := as("-u", u.name, "--", "id", "-u"); code != 0 || strings.TrimSpace(out) != strconv.Itoa(u.uid) {
		t.Fatalf("-u its own name: exit %d, %q", code, out)
	}
	for _, other := range []string{"root", "0", "nobody"} {
		marker := filepath.Join(bin.Dir, "ran-as-"+other)
		out, code := as("-u", other, "--", "touch", marker)
		if code != 125 || !strings.Contains(out, "only as itself") || !strings.Contains(out, "--allow-uid-as-any") {
			t.Fatalf("-u %s from an admitted uid: exit %d, %q; want 125 naming --allow-uid-as-any", other, code, out)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Fatalf("-u %s: the program ran", other)
		}
	}
	// The agent still serves, the admitted uid and root alike.
	if out, code := as("--", "id", "-un"); code != 0 || strings.TrimSpace(out) != u.name {
		t.Fatalf("after the refusals: exit %d, %q", code, out)
	}
	if out, err := exec.Command(bin.Cork, corkExec(a, "--", "id", "-u")...).CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "0" {
		t.Fatalf("root after the refusals: %q, %v", out, err)
	}
}

func TestTrustedUIDRunsAsAnyone(t *testing.T) {
	u := newTestUser(t)
	a := startAgent(t, "--allow-uid-as-any", strconv.Itoa(u.uid))
	out, code := corkAs(u.uid, u.gid, nil, corkExec(a, "-u", "root", "--", "id", "-u")...)
	if code != 0 || strings.TrimSpace(out) != "0" {
		t.Fatalf("-u root from a trusted uid: exit %d, %q", code, out)
	}
	out, code = corkAs(u.uid, u.gid, nil, corkExec(a, "-u", "nobody", "--", "id", "-u")...)
	if code != 0 || strings.TrimSpace(out) != "65534" {
		t.Fatalf("-u nobody from a trusted uid: exit %d, %q", code, out)
	}
}

// TestUIDNotAllowedRefused: a uid that is neither root nor admitted starts
// nothing, whether the socket's mode stops it or the peer check does.
func TestUIDNotAllowedRefused(t *testing.T) {
	u := newTestUser(t)
	a := startAgent(t, "--allow-uid", strconv.Itoa(u.uid))
	marker := filepath.Join(bin.Dir, "ran-for-nobody")
	if out, code := corkAs(65534, 65534, nil, corkExec(a, "--", "touch", marker)...); code != 125 || !strings.Contains(out, "permission denied") {
		t.Fatalf("nobody on a socket owned by %d: exit %d, %q", u.uid, code, out)
	}
	os.Chmod(a.sock(), 0o666)
	if out, code := corkAs(65534, 65534, nil, corkExec(a, "--", "touch", marker)...); code != 125 {
		t.Fatalf("nobody on a socket made 0666: exit %d, %q", code, out)
	}
	termtest.WaitFor(t, "corkd to log the refusal", 5*time.Second, func() bool {
		return strings.Contains(a.logs.String(), "refused unix peer") && strings.Contains(a.logs.String(), "uid=65534")
	})
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("a session ran for a uid that is not allowed")
	}
}

func TestSocketGroup(t *testing.T) {
	u := newTestUser(t)
	a := startAgent(t, "--allow-uid", strconv.Itoa(u.uid), "--allow-uid", "65534", "--socket-group", u.group)
	st, err := os.Stat(a.sock())
	if err != nil {
		t.Fatal(err)
	}
	if sys := st.Sys().(*syscall.Stat_t); st.Mode().Perm() != 0o660 || sys.Uid != 0 || int(sys.Gid) != u.groupGID {
		t.Fatalf("socket mode %v owner %d:%d, want 0660 0:%d", st.Mode().Perm(), sys.Uid, sys.Gid, u.groupGID)
	}
	// A member of the group gets in; nobody, admitted but not a member,
	// is kept out by the mode.
	if out, code := corkAs(u.uid, u.gid, []uint32{uint32(u.groupGID)}, corkExec(a, "--", "id", "-u")...); code != 0 || strings.TrimSpace(out) != strconv.Itoa(u.uid) {
		t.Fatalf("group member: exit %d, %q", code, out)
	}
	if out, code := corkAs(65534, 65534, nil, corkExec(a, "--", "true")...); code != 125 || !strings.Contains(out, "permission denied") {
		t.Fatalf("admitted uid outside the group: exit %d, %q", code, out)
	}
}

// TestSeveralUIDsNeedAGroup: a socket has one owner, so corkd refuses to
// start rather than guess how several uids should reach it.
func TestSeveralUIDsNeedAGroup(t *testing.T) {
	sock := filepath.Join(bin.Dir, "several.sock")
	out, err := exec.Command(bin.Corkd, "serve", "--listen", "unix://"+sock, "--allow-uid", "1000", "--allow-uid-as-any", "1001").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--socket-group") {
		t.Fatalf("corkd with two admitted uids and no group: %v, %q", err, out)
	}
}

// TestAllowedUIDCannotPickAnotherEntry: a second passwd entry for the
// admitted uid, with gid 0 and the shadow group, is not the peer's to
// name: neither cork exec -u nor cork cp -u reads /etc/shadow through it.
func TestAllowedUIDCannotPickAnotherEntry(t *testing.T) {
	u := newTestUser(t)
	alias := u.name + "x"
	mustRun(t, "useradd", "-o", "-u", strconv.Itoa(u.uid), "-g", "0", "-G", "shadow", "-M", "-d", "/", "-N", alias)
	t.Cleanup(func() { removeUser(alias) })
	a := startAgent(t, "--allow-uid", strconv.Itoa(u.uid))

	out, code := corkAs(u.uid, u.gid, nil, corkExec(a, "-u", alias, "--", "sh", "-c", "id -G; cat /etc/shadow")...)
	if code != 125 || strings.Contains(out, "root:") || !strings.Contains(out, "its own passwd entry") {
		t.Fatalf("cork exec -u %s: exit %d, %q; want 125 naming the uid's own entry", alias, code, out)
	}
	out, code = corkAs(u.uid, u.gid, nil, "cp", "--connect", a.url, "-u", alias, ":/etc/shadow", "-")
	if code == 0 || strings.Contains(out, "root:") {
		t.Fatalf("cork cp -u %s :/etc/shadow: exit %d, %q", alias, code, out)
	}
}
