package agent_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/corkvm/cork/guest/agent"
	"github.com/corkvm/cork/protocol"
)

// The user switch, for real: these tests run sessions as nobody and as
// users they create, so they need root (requireRoot skips them without).

func TestUserSwitchNobody(t *testing.T) {
	requireRoot(t)
	srv := newServer(t, agent.Config{})
	r := run(t, srv, protocol.Exec{User: "nobody", TTY: true, Argv: sh(
		`echo "uid=$(id -u) gid=$(id -g) groups=$(id -G) home=$HOME user=$USER logname=$LOGNAME pwd=$(pwd)"; ` +
			`stat -c "tty=%u:%a" "$(tty)"`)}, nil)
	if r.err != nil {
		t.Fatal(r.err)
	}
	for _, want := range []string{"uid=65534", "groups=65534 ", "home=/nonexistent ", "user=nobody", "logname=nobody", "tty=65534:620"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output %q lacks %q", r.stdout, want)
		}
	}
	// nobody's home (/nonexistent) does not exist: HOME still says it, the
	// working directory falls back to /.
	if !strings.Contains(r.stdout, "pwd=/\r") {
		t.Errorf("working directory: %q, want /", r.stdout)
	}
}

func TestUserSwitchByUIDAndUnknownUID(t *testing.T) {
	requireRoot(t)
	srv := newServer(t, agent.Config{})
	r := run(t, srv, protocol.Exec{User: "65534", Argv: sh(`echo "$(id -u) $USER"`)}, nil)
	if r.err != nil || strings.TrimSpace(r.stdout) != "65534 nobody" {
		t.Fatalf("user 65534: %q, %v", r.stdout, r.err)
	}
	// A uid with no passwd entry runs with gid = uid, HOME=/.
	r = run(t, srv, protocol.Exec{User: "54321", Argv: sh(`echo "$(id -u) $(id -g) $(id -G) $HOME"`)}, nil)
	if r.err != nil || strings.TrimSpace(r.stdout) != "54321 54321 54321 /" {
		t.Fatalf("user 54321: %q, %v", r.stdout, r.err)
	}
}

// TestUserSwitchSupplementaryGroups makes a user in a second group: the
// session must carry that group, and none of corkd's own.
func TestUserSwitchSupplementaryGroups(t *testing.T) {
	requireRoot(t)
	if _, err := exec.LookPath("useradd"); err != nil {
		t.Skip("no useradd")
	}
	name, group := "corktest"+strconv.Itoa(os.Getpid()%10000), "corkgrp"+strconv.Itoa(os.Getpid()%10000)
	// The home must be reachable by the user: t.TempDir's parent is 0700.
	home, err := os.MkdirTemp("", "corkhome")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	mustRun(t, "groupadd", group)
	t.Cleanup(func() { exec.Command("groupdel", group).Run() })
	mustRun(t, "useradd", "-M", "-d", home, "-s", "/bin/sh", "-G", group, name)
	t.Cleanup(func() { exec.Command("userdel", name).Run() })
	os.Chmod(home, 0o755)

	srv := newServer(t, agent.Config{})
	r := run(t, srv, protocol.Exec{User: name, Argv: sh(`id -Gn; echo "$HOME $SHELL"; pwd`)}, nil)
	if r.err != nil {
		t.Fatal(r.err)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 {
		t.Fatalf("output %q, stderr %q, exit %+v", r.stdout, r.stderr, r.exit)
	}
	groups := strings.Fields(lines[0])
	if len(groups) != 2 || !strings.Contains(lines[0], group) || strings.Contains(lines[0], "root") {
		t.Errorf("groups %q: want the user's own and %s, nothing of root's", lines[0], group)
	}
	if lines[1] != home+" /bin/sh" || lines[2] != home {
		t.Errorf("home/shell/pwd: %q", lines[1:])
	}
}

func mustRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// TestPathSearchedAsUser: PATH is searched with the permissions of the
// user the program runs as, as execvp does: a directory the user cannot
// enter is skipped, not reported as "permission denied".
func TestPathSearchedAsUser(t *testing.T) {
	requireRoot(t)
	top, err := os.MkdirTemp("", "corkpath")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(top) })
	os.Chmod(top, 0o755)
	rootOnly, public, noExec := filepath.Join(top, "root-only"), filepath.Join(top, "public"), filepath.Join(top, "no-exec")
	for dir, mode := range map[string]os.FileMode{rootOnly: 0o700, public: 0o755, noExec: 0o755} {
		if err := os.Mkdir(dir, mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(dir, mode)
	}
	write := func(dir, name, out string, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\necho "+out+"\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	write(rootOnly, "tool", "root-only", 0o755)
	write(public, "tool", "public", 0o755)
	write(rootOnly, "hidden", "root-only", 0o755)
	write(noExec, "plain", "no-exec", 0o644)
	srv := newServer(t, agent.Config{})
	path := "PATH=" + rootOnly + ":" + noExec + ":" + public

	for _, tt := range []struct {
		user, prog string
		code       int
		out, err   string
	}{
		{"nobody", "tool", 0, "public\n", ""},
		{"root", "tool", 0, "root-only\n", ""},
		{"nobody", "hidden", 127, "", "hidden: command not found"},
		{"nobody", "plain", 126, "", "plain: " + filepath.Join(noExec, "plain") + ": permission denied"},
		{"nobody", "missing", 127, "", "missing: command not found in PATH " + path[5:]},
		{"nobody", filepath.Join(rootOnly, "tool"), 126, "", filepath.Join(rootOnly, "tool") + ": permission denied"},
	} {
		r := run(t, srv, protocol.Exec{User: tt.user, Env: []string{path}, Argv: []string{tt.prog}}, nil)
		if r.err != nil || r.exit.Code != tt.code || r.stdout != tt.out || !strings.Contains(r.stderr, tt.err) {
			t.Errorf("%s as %s: exit %d, stdout %q, stderr %q, %v; want %d, %q, %q", tt.prog, tt.user, r.exit.Code, r.stdout, r.stderr, r.err, tt.code, tt.out, tt.err)
		}
	}
}
