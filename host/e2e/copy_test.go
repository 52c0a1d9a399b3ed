//go:build linux

package e2e

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corkvm/cork/host/e2e/harness"
	"github.com/corkvm/cork/host/e2e/termtest"
)

// cork cp end to end: real cork, real corkd, real users.

func (a *agent) cp(t *testing.T, args ...string) (string, int) {
	t.Helper()
	return corkCmd(append([]string{"cp", "--connect", a.url}, args...)...)
}

// makeTree writes a tree with what a copy must carry: nested directories,
// modes, a link, an empty file, a larger one, and names that are not
// plain text.
func makeTree(t *testing.T, root string) {
	t.Helper()
	big := make([]byte, 3<<20+17)
	rand.Read(big)
	files := map[string]struct {
		data []byte
		mode fs.FileMode
	}{
		"a.txt":                  {[]byte("hello\n"), 0o644},
		"run.sh":                 {[]byte("#!/bin/sh\necho hi\n"), 0o755},
		"secret":                 {[]byte("s"), 0o600},
		"empty":                  {nil, 0o644},
		"sub/deeper/big.bin":     {big, 0o640},
		"sub/new\nline":          {[]byte("newline"), 0o644},
		"sub/\xff\xfe not utf-8": {[]byte("bytes"), 0o644},
	}
	for name, f := range files {
		p := filepath.Join(root, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, f.data, f.mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, f.mode)
	}
	os.Chmod(filepath.Join(root, "sub", "deeper"), 0o750)
	if err := os.Symlink("../a.txt", filepath.Join(root, "sub", "link")); err != nil {
		t.Fatal(err)
	}
}

// sameTree compares two trees byte for byte, with modes and link
// targets, and with owners when owners is set (uid, gid for every entry).
func sameTree(t *testing.T, want, got string, owners *[2]int) {
	t.Helper()
	seen := 0
	filepath.Walk(want, func(p string, wi fs.FileInfo, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(want, p)
		gp := filepath.Join(got, rel)
		gi, err := os.Lstat(gp)
		if err != nil {
			t.Errorf("%q: %v", rel, err)
			return nil
		}
		seen++
		if rel != "." && gi.Mode() != wi.Mode() {
			t.Errorf("%q: mode %v, want %v", rel, gi.Mode(), wi.Mode())
		}
		switch {
		case wi.Mode().IsRegular():
			wb, _ := os.ReadFile(p)
			gb, _ := os.ReadFile(gp)
			if !bytes.Equal(wb, gb) {
				t.Errorf("%q: %d bytes differ from the %d sent", rel, len(gb), len(wb))
			}
			if !gi.ModTime().Equal(wi.ModTime()) {
				t.Errorf("%q: modified %v, want %v", rel, gi.ModTime(), wi.ModTime())
			}
		case wi.Mode()&fs.ModeSymlink != 0:
			wl, _ := os.Readlink(p)
			gl, _ := os.Readlink(gp)
			if wl != gl {
				t.Errorf("%q: link to %q, want %q", rel, gl, wl)
			}
		}
		if owners != nil && rel != "." {
			st := gi.Sys().(*syscall.Stat_t)
			if int(st.Uid) != owners[0] || int(st.Gid) != owners[1] {
				t.Errorf("%q: owned by %d:%d, want %d:%d", rel, st.Uid, st.Gid, owners[0], owners[1])
			}
		}
		return nil
	})
	if seen < 10 {
		t.Fatalf("compared only %d entries", seen)
	}
}

// TestCopyTreeAsUser: a tree goes in as a user, who owns what is written
// (in the user's home for a relative path), and comes back out the same.
func TestCopyTreeAsUser(t *testing.T) {
	u := newTestUser(t)
	a := startAgent(t)
	src := filepath.Join(t.TempDir(), "project")
	makeTree(t, src)

	if out, code := a.cp(t, "-u", u.name, src, ":"+filepath.Join(u.home, "in")); code != 0 {
		t.Fatalf("cp in: exit %d: %s", code, out)
	}
	sameTree(t, src, filepath.Join(u.home, "in"), &[2]int{u.uid, u.gid})

	// A relative guest path is in the user's home.
	if out, code := a.cp(t, "-u", u.name, src, ":rel"); code != 0 {
		t.Fatalf("cp to a relative path: exit %d: %s", code, out)
	}
	sameTree(t, src, filepath.Join(u.home, "rel"), &[2]int{u.uid, u.gid})

	back := t.TempDir()
	if out, code := a.cp(t, "-u", u.name, ":"+filepath.Join(u.home, "in"), back); code != 0 {
		t.Fatalf("cp out: exit %d: %s", code, out)
	}
	sameTree(t, src, filepath.Join(back, "in"), &[2]int{0, 0}) // the invoking user's, as docker cp
}

// TestCopyKeepsOwnersWithArchive: -a gives the copies the sources' owners,
// both ways.
func TestCopyKeepsOwnersWithArchive(t *testing.T) {
	a := startAgent(t)
	src := filepath.Join(t.TempDir(), "owned")
	makeTree(t, src)
	filepath.Walk(src, func(p string, _ fs.FileInfo, _ error) error { return os.Lchown(p, 1234, 5678) })
	dest := t.TempDir()
	if out, code := a.cp(t, "-a", src, ":"+dest); code != 0 {
		t.Fatalf("cp -a in: exit %d: %s", code, out)
	}
	sameTree(t, src, filepath.Join(dest, "owned"), &[2]int{1234, 5678})
	back := t.TempDir()
	if out, code := a.cp(t, "-a", ":"+filepath.Join(dest, "owned"), back); code != 0 {
		t.Fatalf("cp -a out: exit %d: %s", code, out)
	}
	sameTree(t, src, filepath.Join(back, "owned"), &[2]int{1234, 5678})
	// Without -a, the user (root here) owns what is written.
	if out, code := a.cp(t, src, ":"+filepath.Join(dest, "plain")); code != 0 {
		t.Fatalf("cp in: exit %d: %s", code, out)
	}
	sameTree(t, src, filepath.Join(dest, "plain"), &[2]int{0, 0})
}

// TestCopyWithTheUsersPermissions: the guest's side is done with the
// user's rights, supplementary groups included, not root's.
func TestCopyWithTheUsersPermissions(t *testing.T) {
	u := newTestUser(t)
	a := startAgent(t)
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755) // the test's own directory, for the user to reach
	file := filepath.Join(dir, "f.txt")
	os.WriteFile(file, []byte("f"), 0o644)

	rootOnly := filepath.Join(dir, "root-only")
	os.Mkdir(rootOnly, 0o700)
	out, code := a.cp(t, "-u", u.name, file, ":"+rootOnly+"/")
	if code != 1 || !strings.Contains(out, "permission denied") || !strings.Contains(out, rootOnly) {
		t.Fatalf("into a directory the user may not write: exit %d: %s", code, out)
	}
	os.WriteFile(filepath.Join(rootOnly, "secret"), []byte("s"), 0o600)
	os.Chmod(rootOnly, 0o755)
	out, code = a.cp(t, "-u", u.name, ":"+filepath.Join(rootOnly, "secret"), t.TempDir())
	if code != 1 || !strings.Contains(out, "permission denied") {
		t.Fatalf("a file the user may not read: exit %d: %s", code, out)
	}

	groupDir := filepath.Join(dir, "group-dir")
	os.Mkdir(groupDir, 0o770)
	os.Chown(groupDir, 0, u.groupGID)
	os.Chmod(groupDir, 0o770)
	if out, code := a.cp(t, "-u", u.name, file, ":"+groupDir+"/"); code != 0 {
		t.Fatalf("into a directory of one of the user's groups: exit %d: %s", code, out)
	}
	if st, err := os.Stat(filepath.Join(groupDir, "f.txt")); err != nil || int(st.Sys().(*syscall.Stat_t).Uid) != u.uid {
		t.Fatalf("the copy in the group's directory: %v", err)
	}
}

// TestCopyBadDestinations: each is named, with exit 1, and nothing else
// is written.
func TestCopyBadDestinations(t *testing.T) {
	a := startAgent(t)
	host := t.TempDir()
	file := filepath.Join(host, "f.txt")
	os.WriteFile(file, []byte("f"), 0o644)
	dir := filepath.Join(host, "d")
	os.MkdirAll(filepath.Join(dir, "inner"), 0o755)
	guest := t.TempDir()
	guestFile := filepath.Join(guest, "a-file")
	os.WriteFile(guestFile, []byte("x"), 0o644)

	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"a missing source", []string{filepath.Join(host, "nope"), ":" + guest}, "no such file"},
		{"a missing guest source", []string{":" + filepath.Join(guest, "nope"), host}, "no such file"},
		{"a missing parent", []string{file, ":" + filepath.Join(guest, "no", "such", "x")}, "parent directory"},
		{"a missing directory", []string{file, ":" + filepath.Join(guest, "nodir") + "/"}, "no such directory"},
		{"a directory over a file", []string{dir, ":" + guestFile}, "cannot copy a directory over this file"},
		{"several sources, not into a directory", []string{file, dir, ":" + guestFile}, "must be an existing directory"},
	} {
		out, code := a.cp(t, c.args...)
		if code != 1 || !strings.Contains(out, c.want) {
			t.Errorf("%s: exit %d, %q; want 1 and %q", c.name, code, out, c.want)
		}
	}
	if b, _ := os.ReadFile(guestFile); string(b) != "x" {
		t.Fatal("the guest file changed")
	}
	// A file over a directory, inside a tree: that one is named, the rest
	// is copied.
	os.MkdirAll(filepath.Join(guest, "tree", "f.txt"), 0o755)
	tree := filepath.Join(host, "tree")
	os.MkdirAll(tree, 0o755)
	os.WriteFile(filepath.Join(tree, "f.txt"), []byte("f"), 0o644)
	os.WriteFile(filepath.Join(tree, "ok.txt"), []byte("ok"), 0o644)
	out, code := a.cp(t, tree, ":"+guest)
	if code != 1 || !strings.Contains(out, "cannot copy a file over the directory") {
		t.Fatalf("a file over a directory: exit %d: %s", code, out)
	}
	if b, _ := os.ReadFile(filepath.Join(guest, "tree", "ok.txt")); string(b) != "ok" {
		t.Fatal("the rest was not copied")
	}
	// Usage: both sides on the host.
	if out, code := a.cp(t, file, host); code != 125 || !strings.Contains(out, "one side must be in the guest") {
		t.Fatalf("no guest side: exit %d: %s", code, out)
	}
}

// TestCopySkipsSpecialFiles: a FIFO is skipped with a message, not a
// failure.
func TestCopySkipsSpecialFiles(t *testing.T) {
	a := startAgent(t)
	src := filepath.Join(t.TempDir(), "s")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "ok"), []byte("ok"), 0o644)
	syscall.Mkfifo(filepath.Join(src, "fifo"), 0o644)
	dest := t.TempDir()
	out, code := a.cp(t, src, ":"+dest)
	if code != 0 || !strings.Contains(out, "fifo") || !strings.Contains(out, "skipped: a FIFO") {
		t.Fatalf("exit %d: %s", code, out)
	}
	if _, err := os.Lstat(filepath.Join(dest, "s", "fifo")); err == nil {
		t.Fatal("the FIFO was copied")
	}
	back := t.TempDir()
	out, code = a.cp(t, ":"+src, back)
	if code != 0 || !strings.Contains(out, "skipped: a FIFO") {
		t.Fatalf("out: exit %d: %s", code, out)
	}
}

// TestCopyFullDisk: a guest disk that fills names the file, leaves no part
// of it, and still copies what fits.
func TestCopyFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	a := startAgent(t)
	small := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", small).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", small).Run() })
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(src, 0o755)
	big := make([]byte, 4<<20)
	os.WriteFile(filepath.Join(src, "a-big"), big, 0o644)
	os.WriteFile(filepath.Join(src, "b-small"), []byte("fits"), 0o644)
	out, code := a.cp(t, src+"/.", ":"+small)
	if code != 1 || !strings.Contains(out, "a-big") || !strings.Contains(out, "no space left") {
		t.Fatalf("exit %d: %s", code, out)
	}
	left, _ := os.ReadDir(small)
	var names []string
	for _, e := range left {
		names = append(names, e.Name())
	}
	if len(names) != 1 || names[0] != "b-small" {
		t.Fatalf("the full disk holds %q, want only b-small", names)
	}
}

// TestCopyCutHalfway: a connection cut in the middle of a file fails the
// copy (cork's own error), and leaves no part of the file under its name,
// in either direction.
func TestCopyCutHalfway(t *testing.T) {
	a := startAgent(t)
	proxy, err := harness.NewCutProxy(filepath.Join(bin.Dir, fmt.Sprintf("cut-%d.sock", time.Now().UnixNano())), a.Sock)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	src := filepath.Join(t.TempDir(), "huge")
	f, _ := os.Create(src)
	f.Truncate(2 << 30) // sparse: cheap to make, long enough to cut
	f.Close()

	for _, dir := range []string{"in", "out"} {
		dest := t.TempDir()
		args := []string{"cp", "-q", "--connect", proxy.URL(), src, ":" + dest}
		if dir == "out" {
			args = []string{"cp", "-q", "--connect", proxy.URL(), ":" + src, dest}
		}
		cmd := exec.Command(bin.Cork, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		termtest.WaitFor(t, "a part of the file under a temporary name", 20*time.Second, func() bool {
			m, _ := filepath.Glob(filepath.Join(dest, ".cork-cp-*"))
			if len(m) == 0 {
				return false
			}
			st, err := os.Stat(m[0])
			return err == nil && st.Size() > 0
		})
		proxy.Cut()
		cmd.Wait()
		if code := cmd.ProcessState.ExitCode(); code != 125 {
			t.Fatalf("%s: exit %d after the cut: %s", dir, code, stderr.String())
		}
		termtest.WaitFor(t, "the temporary file to go", 10*time.Second, func() bool {
			left, _ := os.ReadDir(dest)
			return len(left) == 0
		})
	}
}

// TestCopyShrinkingFile: a guest file that reads shorter than its size (a
// sysfs file says 4096 bytes and holds a few) is named and dropped, and
// the copy goes on with the rest.
func TestCopyShrinkingFile(t *testing.T) {
	const sysfs = "/sys/kernel/uevent_seqnum"
	if fi, err := os.Stat(sysfs); err != nil || fi.Size() == 0 {
		t.Skipf("%s: %v; this test needs a sysfs file whose size is more than it holds", sysfs, err)
	}
	a := startAgent(t)
	ok := filepath.Join(t.TempDir(), "ok")
	os.WriteFile(ok, []byte("ok"), 0o644)
	dest := t.TempDir()
	out, code := a.cp(t, ":"+sysfs, ":"+ok, dest)
	if code != 1 || !strings.Contains(out, "uevent_seqnum") || !strings.Contains(out, "shrank while being copied") {
		t.Fatalf("exit %d: %s", code, out)
	}
	if _, err := os.Lstat(filepath.Join(dest, "uevent_seqnum")); err == nil {
		t.Error("the shrunk file landed")
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "ok")); string(b) != "ok" {
		t.Error("the rest was not copied")
	}
}

// TestCopyHostileTar: a tar stream on stdin whose entries climb out, are
// absolute, or write through a link it made, writes nothing outside.
func TestCopyHostileTar(t *testing.T) {
	a := startAgent(t)
	dest := t.TempDir()
	outside := t.TempDir()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(h *tar.Header, data string) {
		h.Size = int64(len(data))
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		tw.WriteHeader(h)
		tw.Write([]byte(data))
	}
	add(&tar.Header{Name: "../escaped", Typeflag: tar.TypeReg}, "x")
	add(&tar.Header{Name: outside + "/absolute", Typeflag: tar.TypeReg}, "x")
	add(&tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: outside}, "")
	add(&tar.Header{Name: "link/through", Typeflag: tar.TypeReg}, "x")
	add(&tar.Header{Name: "fine/inside.txt", Typeflag: tar.TypeReg}, "inside")
	tw.Close()

	cmd := exec.Command(bin.Cork, "cp", "--connect", a.url, "-", ":"+dest)
	cmd.Stdin = &buf
	out, _ := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 1 {
		t.Fatalf("exit %d: %s", code, out)
	}
	for _, want := range []string{"../escaped", "absolute", "link/through"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("%q not named: %s", want, out)
		}
	}
	if left, _ := os.ReadDir(outside); len(left) > 0 {
		t.Fatalf("written outside: %v", left)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dest), "escaped")); err == nil {
		t.Fatal("../escaped was written")
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "fine", "inside.txt")); string(b) != "inside" {
		t.Fatal("the honest entry was not copied")
	}
}

// TestCopyBadTarEnds: a tar stream on stdin that turns to garbage ends
// the copy with a message naming the stream, promptly, instead of waiting
// for an answer the agent never sends; what came before it is copied.
func TestCopyBadTarEnds(t *testing.T) {
	a := startAgent(t)
	dest := t.TempDir()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "first", Mode: 0o644, Size: 5, Typeflag: tar.TypeReg})
	tw.Write([]byte("first"))
	tw.Flush()
	buf.Write(bytes.Repeat([]byte("garbage!"), 64)) // a header whose checksum is wrong

	cmd := exec.Command(bin.Cork, "cp", "--connect", a.url, "-", ":"+dest)
	cmd.Stdin = &buf
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if !exitsWithin(cmd, 20*time.Second) {
		t.Fatalf("cork cp still running 20 s after its stdin ended: %s", out.String())
	}
	if code := cmd.ProcessState.ExitCode(); code != 125 || !strings.Contains(out.String(), "reading the tar stream") {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	termtest.WaitFor(t, "the agent to end the copy", 10*time.Second, func() bool {
		return strings.Contains(a.logs.String(), "copy in ended early")
	})
	if b, _ := os.ReadFile(filepath.Join(dest, "first")); string(b) != "first" {
		t.Error("what came before the garbage was not copied")
	}
}

// TestCopyHardLinks: names of one file stay one file, in a tree copy
// both ways and in a tar stream both ways, as tar -x and docker cp keep
// them.
func TestCopyHardLinks(t *testing.T) {
	a := startAgent(t)
	src := filepath.Join(t.TempDir(), "t")
	os.MkdirAll(filepath.Join(src, "sub"), 0o755)
	os.WriteFile(filepath.Join(src, "a"), []byte("shared"), 0o644)
	os.Link(filepath.Join(src, "a"), filepath.Join(src, "sub", "b"))
	sameFile := func(how, root string) {
		t.Helper()
		fa, err1 := os.Stat(filepath.Join(root, "a"))
		fb, err2 := os.Stat(filepath.Join(root, "sub", "b"))
		if err1 != nil || err2 != nil || !os.SameFile(fa, fb) {
			t.Errorf("%s: a and sub/b are not one file: %v %v", how, err1, err2)
		}
	}
	guest := t.TempDir()
	if out, code := a.cp(t, src, ":"+guest); code != 0 {
		t.Fatalf("tree in: exit %d: %s", code, out)
	}
	sameFile("tree in", filepath.Join(guest, "t"))
	host := t.TempDir()
	if out, code := a.cp(t, ":"+src, host); code != 0 {
		t.Fatalf("tree out: exit %d: %s", code, out)
	}
	sameFile("tree out", filepath.Join(host, "t"))

	tarIn := t.TempDir()
	c := exec.Command("sh", "-c", fmt.Sprintf("tar -C %s -c . | %s cp --connect %s - :%s", src, bin.Cork, a.url, tarIn))
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("tar in: %v: %s", err, out)
	}
	sameFile("tar in", tarIn)
	tarOut := t.TempDir()
	c = exec.Command("sh", "-c", fmt.Sprintf("%s cp --connect %s :%s - | tar -C %s -x", bin.Cork, a.url, src, tarOut))
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("tar out: %v: %s", err, out)
	}
	sameFile("tar out", filepath.Join(tarOut, "t"))
}

// TestCopyRefusedWhileStdinWaits: a copy the agent refuses (an unknown
// user) ends with the agent's reason at once, even while the tar stream on
// stdin has nothing more to give yet.
func TestCopyRefusedWhileStdinWaits(t *testing.T) {
	a := startAgent(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close() // held open: stdin never ends during the test
	cmd := exec.Command(bin.Cork, "cp", "--connect", a.url, "-u", "no-such-user-here", "-", ":"+t.TempDir())
	cmd.Stdin = r
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	if !exitsWithin(cmd, 20*time.Second) {
		t.Fatalf("cork cp still waiting for stdin 20 s after the agent refused: %s", out.String())
	}
	if code := cmd.ProcessState.ExitCode(); code != 125 || !strings.Contains(out.String(), "no-such-user-here") {
		t.Fatalf("exit %d: %s", code, out.String())
	}
}

// TestCopyTarOut: - as the destination writes a tar stream of the source,
// under its name, as docker cp does.
func TestCopyTarOut(t *testing.T) {
	a := startAgent(t)
	src := filepath.Join(t.TempDir(), "project")
	makeTree(t, src)
	cmd := exec.Command(bin.Cork, "cp", "--connect", a.url, ":"+src, "-")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v", err)
	}
	dest := t.TempDir()
	x := exec.Command("tar", "-x", "-C", dest)
	x.Stdin = bytes.NewReader(out)
	if msg, err := x.CombinedOutput(); err != nil {
		t.Fatalf("tar -x: %v %s", err, msg)
	}
	sameTree(t, src, filepath.Join(dest, "project"), nil)
}

// TestCopyProgress: on a terminal, a copy that takes over a second shows
// a progress line and ends with a summary; -q silences both; off a
// terminal there is neither.
func TestCopyProgress(t *testing.T) {
	a := startAgent(t)
	dest := t.TempDir()
	run := func(quiet bool) string {
		// A tar stream that trickles in for about two seconds.
		r, w, _ := os.Pipe()
		go func() {
			tw := tar.NewWriter(w)
			for i := range 20 {
				tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("f%d", i), Mode: 0o644, Size: 1 << 20, Typeflag: tar.TypeReg})
				tw.Write(make([]byte, 1<<20))
				time.Sleep(100 * time.Millisecond)
			}
			tw.Close()
			w.Close()
		}()
		args := []string{"cp", "--connect", a.url, "-", ":" + dest}
		if quiet {
			args = append(args[:1], append([]string{"-q"}, args[1:]...)...)
		}
		term, err := termtest.Open(termtest.Options{Rows: 24, Cols: 100, Stdin: r}, bin.Cork, args...)
		if err != nil {
			t.Fatal(err)
		}
		defer term.Close()
		r.Close()
		if code := term.Wait(t); code != 0 {
			t.Fatalf("exit %d: %q", code, term.Out.String())
		}
		return term.Out.String()
	}
	out := run(false)
	if !strings.Contains(out, "copied, ") || !strings.Contains(out, "Copied 20.0 MiB in 20 files to :"+dest) {
		t.Fatalf("no progress and summary on a terminal: %q", out)
	}
	if out := run(true); strings.Contains(out, "copied") || strings.Contains(out, "Copied") {
		t.Fatalf("-q: %q", out)
	}
	src := filepath.Join(t.TempDir(), "f")
	os.WriteFile(src, []byte("x"), 0o644)
	if out, code := a.cp(t, src, ":"+dest); code != 0 || out != "" {
		t.Fatalf("off a terminal: exit %d, %q", code, out)
	}
}

// TestCopyOutMergeNeverOpensUp: directories a copy out merges into keep
// the permission bits they lack off and their sticky bit on, whatever
// mode the guest sends (~/.ssh stays 0700, a sticky directory stays
// sticky); with -a they take the guest's modes, as docker cp gives them.
func TestCopyOutMergeNeverOpensUp(t *testing.T) {
	a := startAgent(t)
	src := t.TempDir()
	for _, d := range []string{".ssh", "tmp"} {
		os.Mkdir(filepath.Join(src, d), 0o777)
		os.Chmod(filepath.Join(src, d), 0o777)
	}
	for _, c := range []struct {
		args     []string
		ssh, tmp fs.FileMode
	}{
		{nil, 0o700, os.ModeSticky | 0o777},
		{[]string{"-a"}, 0o777, 0o777},
	} {
		home := t.TempDir()
		os.Mkdir(filepath.Join(home, ".ssh"), 0o700)
		os.Mkdir(filepath.Join(home, "tmp"), 0o777)
		os.Chmod(filepath.Join(home, "tmp"), os.ModeSticky|0o777)
		if out, code := a.cp(t, append(c.args, ":"+src+"/.", home)...); code != 0 {
			t.Fatalf("cp %v: exit %d: %s", c.args, code, out)
		}
		for d, want := range map[string]fs.FileMode{".ssh": c.ssh, "tmp": c.tmp} {
			if fi, err := os.Stat(filepath.Join(home, d)); err != nil || fi.Mode()&^fs.ModeDir != want {
				t.Errorf("cp %v: %s: %v, %v; want %v", c.args, d, fi.Mode(), err, want)
			}
		}
	}
}
