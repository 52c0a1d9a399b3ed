package copytree

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// asNobody runs f with this thread's filesystem identity set to nobody's,
// as the agent does a copy for a user: the kernel then refuses what
// nobody may not do, chown included.
func asNobody(t *testing.T, f func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to take another filesystem uid")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	unix.Setfsgid(65534)
	unix.Setfsuid(65534)
	defer unix.Setfsgid(0)
	defer unix.Setfsuid(0)
	f()
}

// TestKeepOwnersRefusedNamesEverything: with -a as a user who may not give
// files away, a directory whose owner is refused is not left behind empty,
// and everything it would hold is named, not skipped in silence.
func TestKeepOwnersRefusedNamesEverything(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "t")
	write(t, filepath.Join(src, "sub", "f"), "f", 0o644)
	write(t, filepath.Join(src, "sub", "deeper", "g"), "g", 0o644)
	out := filepath.Join(dir, "out")
	os.Mkdir(out, 0o777)
	os.Chmod(out, 0o777)
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755)

	var problems []problem
	asNobody(t, func() {
		problems = copyLocal(t, false, &Dest{Path: []byte(out), KeepOwners: true}, src)
	})
	named := map[string]bool{}
	for _, p := range problems {
		rel, _ := filepath.Rel(out, p.path)
		named[rel] = true
	}
	if len(problems) == 0 || problems[0].path != filepath.Join(out, "t") || !strings.Contains(problems[0].msg, "nothing in it is copied") {
		t.Errorf("the root: problems %+v", problems)
	}
	// Beneath the root: its owner given, the same again one level down.
	problems = nil
	os.MkdirAll(filepath.Join(out, "t"), 0o777)
	os.Chmod(filepath.Join(out, "t"), 0o777)
	asNobody(t, func() {
		problems = copyLocal(t, false, &Dest{Path: []byte(out), KeepOwners: true}, src)
	})
	for _, p := range problems {
		rel, _ := filepath.Rel(out, p.path)
		named[rel] = true
	}
	for _, want := range []string{"t/sub", "t/sub/f", "t/sub/deeper", "t/sub/deeper/g"} {
		if !named[want] {
			t.Errorf("%s not named; problems: %+v", want, problems)
		}
	}
	os.Remove(filepath.Join(out, "t"))
	if left, _ := os.ReadDir(out); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}
