package copytree

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/prototest"
)

type problem struct {
	path, msg string
	skipped   bool
}

// copyLocal sends srcs through a Sender and a Receiver into dest, in
// memory, and returns the problems both told.
func copyLocal(t *testing.T, follow bool, dest *Dest, srcs ...string) []problem {
	t.Helper()
	return copyLocalWith(t, Sender{Follow: follow}, dest, srcs...)
}

// copyLocalWith is copyLocal with the Sender's options taken from opts.
func copyLocalWith(t *testing.T, opts Sender, dest *Dest, srcs ...string) []problem {
	t.Helper()
	pr, pw := io.Pipe()
	var problems []problem
	tell := func(p []byte, msg string, skipped bool) {
		problems = append(problems, problem{string(p), msg, skipped})
	}
	sent := make(chan error, 1)
	go func() {
		w := protocol.NewWriter(pw)
		s := &Sender{W: w, Follow: opts.Follow, Hardlinks: opts.Hardlinks, Chunk: 1000, Problem: tell}
		for _, src := range srcs {
			if err := s.Send(src); err != nil {
				sent <- err
				pw.CloseWithError(err)
				return
			}
		}
		sent <- w.WriteJSON(protocol.TypeCopyDone, &protocol.CopyDone{Files: s.Files, Bytes: s.Bytes})
	}()
	r := &Receiver{R: protocol.NewReader(pr), Sink: dest, Problem: tell}
	if _, err := r.Receive(); err != nil {
		t.Fatalf("receive: %v", err)
	}
	if err := <-sent; err != nil {
		t.Fatalf("send: %v", err)
	}
	return problems
}

func write(t *testing.T, p, content string, mode fs.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	os.Chmod(p, mode)
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func noProblems(t *testing.T, problems []problem) {
	t.Helper()
	if len(problems) > 0 {
		t.Fatalf("problems: %+v", problems)
	}
}

func oneProblem(t *testing.T, problems []problem, want string) {
	t.Helper()
	if len(problems) != 1 || !strings.Contains(problems[0].msg, want) {
		t.Fatalf("problems %+v, want one saying %q", problems, want)
	}
}

// TestFileDestinations: a file goes to a new name, into a directory under
// its own name, or over a file; a trailing slash on a missing destination
// and a missing parent are refused.
func TestFileDestinations(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src", "prompt.md")
	write(t, src, "hello", 0o640)
	when := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	os.Chtimes(src, when, when)
	out := filepath.Join(dir, "out")
	os.Mkdir(out, 0o755)

	noProblems(t, copyLocal(t, false, &Dest{Path: []byte(filepath.Join(out, "new.md"))}, src))
	fi, err := os.Stat(filepath.Join(out, "new.md"))
	if err != nil || fi.Mode().Perm() != 0o640 || !fi.ModTime().Equal(when) || read(t, filepath.Join(out, "new.md")) != "hello" {
		t.Fatalf("to a new name: %v, %v", fi, err)
	}
	noProblems(t, copyLocal(t, false, &Dest{Path: []byte(out + "/")}, src))
	if read(t, filepath.Join(out, "prompt.md")) != "hello" {
		t.Fatal("into a directory")
	}
	write(t, filepath.Join(out, "old.md"), "a longer old content", 0o600)
	noProblems(t, copyLocal(t, false, &Dest{Path: []byte(filepath.Join(out, "old.md"))}, src))
	if read(t, filepath.Join(out, "old.md")) != "hello" {
		t.Fatal("over a file")
	}
	oneProblem(t, copyLocal(t, false, &Dest{Path: []byte(filepath.Join(out, "nodir") + "/")}, src), "no such directory")
	oneProblem(t, copyLocal(t, false, &Dest{Path: []byte(filepath.Join(out, "no", "such", "x"))}, src), "parent directory")
	leftovers, _ := filepath.Glob(filepath.Join(out, tmpPrefix+"*"))
	if len(leftovers) > 0 {
		t.Fatalf("temporary files left: %v", leftovers)
	}
}

// TestDirectoryDestinations: a directory becomes a new directory, goes
// into an existing one under its own name, or with "/." gives its
// contents; over a file it is refused.
func TestDirectoryDestinations(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "project")
	write(t, filepath.Join(src, "a.txt"), "a", 0o644)
	write(t, filepath.Join(src, "sub", "b.sh"), "b", 0o755)
	os.Chmod(filepath.Join(src, "sub"), 0o750)
	os.Symlink("sub/b.sh", filepath.Join(src, "link"))

	check := func(root string) {
		t.Helper()
		if read(t, filepath.Join(root, "a.txt")) != "a" || read(t, filepath.Join(root, "sub", "b.sh")) != "b" {
			t.Fatalf("%s: contents differ", root)
		}
		if fi, _ := os.Stat(filepath.Join(root, "sub")); fi.Mode().Perm() != 0o750 {
			t.Fatalf("%s/sub: mode %v", root, fi.Mode())
		}
		if fi, _ := os.Stat(filepath.Join(root, "sub", "b.sh")); fi.Mode().Perm() != 0o755 {
			t.Fatalf("%s/sub/b.sh: mode %v", root, fi.Mode())
		}
		if l, err := os.Readlink(filepath.Join(root, "link")); err != nil || l != "sub/b.sh" {
			t.Fatalf("%s/link: %q, %v", root, l, err)
		}
	}
	noProblems(t, copyLocal(t, false, &Dest{Path: []byte(filepath.Join(dir, "new"))}, src))
	check(filepath.Join(dir, "new"))

	existing := filepath.Join(dir, "existing")
	os.Mkdir(existing, 0o755)
	noProblems(t, copyLocal(t, false, &Dest{Path: []byte(existing)}, src))
	check(filepath.Join(existing, "project"))

	contents := filepath.Join(dir, "contents")
	write(t, filepath.Join(contents, "kept.txt"), "kept", 0o644)
	noProblems(t, copyLocal(t, false, &Dest{Path: []byte(contents)}, src+"/."))
	check(contents)
	if read(t, filepath.Join(contents, "kept.txt")) != "kept" {
		t.Fatal("what was there went")
	}

	file := filepath.Join(dir, "file")
	write(t, file, "f", 0o644)
	oneProblem(t, copyLocal(t, false, &Dest{Path: []byte(file)}, src), "cannot copy a directory over this file")
}

// TestSeveralSources need an existing directory.
func TestSeveralSources(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a"), "a", 0o644)
	write(t, filepath.Join(dir, "b"), "b", 0o644)
	into := filepath.Join(dir, "into")
	os.Mkdir(into, 0o755)
	noProblems(t, copyLocal(t, false, &Dest{Path: []byte(into), Sources: 2}, filepath.Join(dir, "a"), filepath.Join(dir, "b")))
	if read(t, filepath.Join(into, "a")) != "a" || read(t, filepath.Join(into, "b")) != "b" {
		t.Fatal("several sources")
	}
	problems := copyLocal(t, false, &Dest{Path: []byte(filepath.Join(dir, "missing")), Sources: 2}, filepath.Join(dir, "a"), filepath.Join(dir, "b"))
	if len(problems) != 2 || !strings.Contains(problems[0].msg, "existing directory") {
		t.Fatalf("%+v", problems)
	}
}

// TestSourceProblems: a missing source is a problem, the rest still go;
// a FIFO is skipped with a message.
func TestSourceProblems(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "src", "ok"), "ok", 0o644)
	if err := syscall.Mkfifo(filepath.Join(dir, "src", "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	into := filepath.Join(dir, "into")
	os.Mkdir(into, 0o755)
	problems := copyLocal(t, false, &Dest{Path: []byte(into), Sources: 2}, filepath.Join(dir, "nope"), filepath.Join(dir, "src"))
	if len(problems) != 2 || !strings.Contains(problems[0].msg, "no such file") || problems[0].skipped ||
		!problems[1].skipped || !strings.Contains(problems[1].msg, "a FIFO") || !strings.HasSuffix(problems[1].path, "src/fifo") {
		t.Fatalf("%+v", problems)
	}
	if read(t, filepath.Join(into, "src", "ok")) != "ok" {
		t.Fatal("the rest was not copied")
	}
	if _, err := os.Lstat(filepath.Join(into, "src", "fifo")); err == nil {
		t.Fatal("the FIFO was copied")
	}
}

// TestLinksAndFollow: a link is copied as a link; -L copies what a source
// that is a link points to.
func TestLinksAndFollow(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "target"), "t", 0o644)
	os.Symlink("target", filepath.Join(dir, "link"))
	out := filepath.Join(dir, "out")
	os.Mkdir(out, 0o755)
	noProblems(t, copyLocal(t, false, &Dest{Path: []byte(out)}, filepath.Join(dir, "link")))
	if l, err := os.Readlink(filepath.Join(out, "link")); err != nil || l != "target" {
		t.Fatalf("a link: %q, %v", l, err)
	}
	os.Remove(filepath.Join(out, "link"))
	noProblems(t, copyLocal(t, true, &Dest{Path: []byte(out)}, filepath.Join(dir, "link")))
	if fi, err := os.Lstat(filepath.Join(out, "link")); err != nil || !fi.Mode().IsRegular() || read(t, filepath.Join(out, "link")) != "t" {
		t.Fatalf("followed: %v, %v", fi, err)
	}
}

// TestOddNames: names are bytes: newlines and bytes that are not UTF-8
// arrive as they are.
func TestOddNames(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	names := []string{"new\nline", "\xff\xfe not utf-8", "tab\tand space"}
	for _, n := range names {
		write(t, filepath.Join(src, n), n, 0o644)
	}
	noProblems(t, copyLocal(t, false, &Dest{Path: []byte(filepath.Join(dir, "out"))}, src))
	for _, n := range names {
		if read(t, filepath.Join(dir, "out", n)) != n {
			t.Fatalf("%q", n)
		}
	}
}

// TestConflictsInsideATree: a file over a directory and a directory over
// a file are problems; what a refused directory holds is not written, and
// each thing in it is named.
func TestConflictsInsideATree(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "t")
	write(t, filepath.Join(src, "d", "inner"), "i", 0o644)
	write(t, filepath.Join(src, "f"), "f", 0o644)
	out := filepath.Join(dir, "out")
	write(t, filepath.Join(out, "t", "d"), "I am a file", 0o644)
	write(t, filepath.Join(out, "t", "f", "x"), "I am in a directory", 0o644)
	problems := copyLocal(t, false, &Dest{Path: []byte(out)}, src)
	if len(problems) != 3 || !strings.Contains(problems[0].msg, "directory over the file") ||
		!strings.HasSuffix(problems[1].path, "t/d/inner") || !strings.Contains(problems[1].msg, "the directory it is in was not") ||
		!strings.Contains(problems[2].msg, "file over the directory") {
		t.Fatalf("%+v", problems)
	}
	if read(t, filepath.Join(out, "t", "d")) != "I am a file" || read(t, filepath.Join(out, "t", "f", "x")) != "I am in a directory" {
		t.Fatal("what was there changed")
	}
}

// hostile writes frames no honest sender makes.
func hostile(t *testing.T, dest *Dest, frames func(w *protocol.Writer)) ([]problem, error) {
	t.Helper()
	pr, pw := io.Pipe()
	go func() {
		w := protocol.NewWriter(pw)
		frames(w)
		pw.Close()
	}()
	var problems []problem
	r := &Receiver{R: protocol.NewReader(pr), Sink: dest, Problem: func(p []byte, msg string, skipped bool) {
		problems = append(problems, problem{string(p), msg, skipped})
	}}
	_, err := r.Receive()
	pr.Close()
	return problems, err
}

func entry(t *testing.T, e protocol.Entry) []byte {
	t.Helper()
	b, err := protocol.EncodeEntry(&e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestHostileTrees: entries that climb out, absolute ones, and links to
// write through are refused; nothing lands outside the destination.
func TestHostileTrees(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	outside := filepath.Join(dir, "outside")
	os.Mkdir(out, 0o755)
	os.Mkdir(outside, 0o755)
	root := entry(t, protocol.Entry{Kind: protocol.EntryDir, Mode: 0o755, Path: []byte("evil")})
	file := func(p string) []byte {
		return entry(t, protocol.Entry{Kind: protocol.EntryFile, Mode: 0o644, Size: 1, Path: []byte(p)})
	}

	for name, p := range map[string][]byte{"dot dot": file("../../outside/x"), "absolute": file(outside + "/x")} {
		_, err := hostile(t, &Dest{Path: []byte(out)}, func(w *protocol.Writer) {
			w.WriteFrame(protocol.TypeCopyRoot, root)
			w.WriteFrame(protocol.TypeCopyEntry, p)
			w.WriteFrame(protocol.TypeCopyData, []byte("x"))
			w.WriteJSON(protocol.TypeCopyEnd, &protocol.CopyEnd{})
			w.WriteJSON(protocol.TypeCopyDone, &protocol.CopyDone{})
		})
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// A link made by the copy, then a file through it.
	problems, err := hostile(t, &Dest{Path: []byte(out)}, func(w *protocol.Writer) {
		w.WriteFrame(protocol.TypeCopyRoot, root)
		w.WriteFrame(protocol.TypeCopyEntry, entry(t, protocol.Entry{Kind: protocol.EntrySymlink, Mode: 0o777, Path: []byte("l"), Link: []byte(outside)}))
		w.WriteFrame(protocol.TypeCopyEntry, file("l/x"))
		w.WriteFrame(protocol.TypeCopyData, []byte("x"))
		w.WriteJSON(protocol.TypeCopyEnd, &protocol.CopyEnd{})
		w.WriteJSON(protocol.TypeCopyDone, &protocol.CopyDone{})
	})
	if err != nil || len(problems) != 1 || !strings.Contains(problems[0].msg, "symbolic link") {
		t.Fatalf("through a link: %+v, %v", problems, err)
	}
	// A root named to climb out.
	_, err = hostile(t, &Dest{Path: []byte(out)}, func(w *protocol.Writer) {
		w.WriteFrame(protocol.TypeCopyRoot, entry(t, protocol.Entry{Kind: protocol.EntryFile, Size: 1, Path: []byte("../x")}))
	})
	if err == nil {
		t.Error("a root named ../x accepted")
	}
	if left, _ := os.ReadDir(outside); len(left) > 0 {
		t.Fatalf("written outside: %v", left)
	}
}

// TestCutOffLeavesNoPart: a copy that ends in the middle of a file leaves
// nothing under the file's name, and no temporary file.
func TestCutOffLeavesNoPart(t *testing.T) {
	out := t.TempDir()
	_, err := hostile(t, &Dest{Path: []byte(out)}, func(w *protocol.Writer) {
		w.WriteFrame(protocol.TypeCopyRoot, entry(t, protocol.Entry{Kind: protocol.EntryFile, Mode: 0o644, Size: 100, Path: []byte("big")}))
		w.WriteFrame(protocol.TypeCopyData, bytes.Repeat([]byte("x"), 50))
	})
	if err == nil {
		t.Fatal("a cut-off copy reported no error")
	}
	if left, _ := os.ReadDir(out); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
	// A sender that says the file went wrong: dropped, no error.
	problems, err := hostile(t, &Dest{Path: []byte(out)}, func(w *protocol.Writer) {
		w.WriteFrame(protocol.TypeCopyRoot, entry(t, protocol.Entry{Kind: protocol.EntryFile, Mode: 0o644, Size: 100, Path: []byte("big")}))
		w.WriteFrame(protocol.TypeCopyData, bytes.Repeat([]byte("x"), 50))
		w.WriteJSON(protocol.TypeCopyEnd, &protocol.CopyEnd{Error: "it shrank"})
		w.WriteJSON(protocol.TypeCopyDone, &protocol.CopyDone{})
	})
	if err != nil || len(problems) != 0 {
		t.Fatalf("%+v, %v", problems, err)
	}
	if left, _ := os.ReadDir(out); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
}

// TestMalformedCopiesReleaseEverything: whatever way a copy goes wrong in
// the middle of a file (too much data, too little, a cut, a frame that has
// no place there), the receiver drops the file, closes every directory it
// opened, leaves no temporary file, and gives the directories it made
// their modes.
func TestMalformedCopiesReleaseEverything(t *testing.T) {
	root := entry(t, protocol.Entry{Kind: protocol.EntryDir, Mode: 0o755, Path: []byte("t")})
	sub := entry(t, protocol.Entry{Kind: protocol.EntryDir, Mode: 0o750, Path: []byte("sub")})
	file := entry(t, protocol.Entry{Kind: protocol.EntryFile, Mode: 0o644, Size: 10, Path: []byte("sub/f")})
	for _, c := range []struct {
		name   string
		frames func(w *protocol.Writer)
	}{
		{"too much data", func(w *protocol.Writer) { w.WriteFrame(protocol.TypeCopyData, make([]byte, 20)) }},
		{"file short", func(w *protocol.Writer) {
			w.WriteFrame(protocol.TypeCopyData, make([]byte, 5))
			w.WriteJSON(protocol.TypeCopyEnd, &protocol.CopyEnd{})
		}},
		{"connection cut", func(w *protocol.Writer) { w.WriteFrame(protocol.TypeCopyData, make([]byte, 5)) }},
		{"problem frame from the host", func(w *protocol.Writer) {
			w.WriteJSON(protocol.TypeCopyProblem, &protocol.CopyProblem{Path: []byte("x"), Message: "m"})
		}},
		{"an entry mid-file", func(w *protocol.Writer) { w.WriteFrame(protocol.TypeCopyEntry, file) }},
		{"an error frame", func(w *protocol.Writer) {
			w.WriteJSON(protocol.TypeError, &protocol.Error{Kind: protocol.KindProtocol, Message: "m"})
		}},
		{"a bad end", func(w *protocol.Writer) { w.WriteFrame(protocol.TypeCopyEnd, []byte("{")) }},
	} {
		out := t.TempDir()
		before := prototest.OpenFds(t)
		_, err := hostile(t, &Dest{Path: []byte(out)}, func(w *protocol.Writer) {
			w.WriteFrame(protocol.TypeCopyRoot, root)
			w.WriteFrame(protocol.TypeCopyEntry, sub)
			w.WriteFrame(protocol.TypeCopyEntry, file)
			w.WriteFrame(protocol.TypeCopyData, make([]byte, 3))
			c.frames(w)
		})
		if err == nil {
			t.Errorf("%s: no error", c.name)
		}
		if after := prototest.OpenFds(t); after != before {
			t.Errorf("%s: %d fds open before, %d after", c.name, before, after)
		}
		filepath.Walk(out, func(p string, fi fs.FileInfo, err error) error {
			if err == nil && strings.HasPrefix(fi.Name(), tmpPrefix) {
				t.Errorf("%s: temporary file left: %s", c.name, p)
			}
			return nil
		})
		if fi, err := os.Stat(filepath.Join(out, "t", "sub")); err != nil || fi.Mode().Perm() != 0o750 {
			t.Errorf("%s: the directory made: %v, %v; want mode 0750", c.name, fi.Mode(), err)
		}
		if _, err := os.Lstat(filepath.Join(out, "t", "sub", "f")); err == nil {
			t.Errorf("%s: the file landed", c.name)
		}
	}
}

// TestShrunkFileIsDroppedAndTheCopyGoesOn: a file that shrinks while the
// guest reads it (a sysfs file) is told in a CopyProblem before its
// CopyEnd, as the agent sends it; the host drops that file and copies the
// rest.
func TestShrunkFileIsDroppedAndTheCopyGoesOn(t *testing.T) {
	out := t.TempDir()
	pr, pw := io.Pipe()
	go func() {
		w := protocol.NewWriter(pw)
		s := &Sender{W: w, Problem: func(p []byte, msg string, skipped bool) {
			w.WriteJSON(protocol.TypeCopyProblem, &protocol.CopyProblem{Path: p, Message: msg, Skipped: skipped})
		}}
		now := time.Now()
		s.Put(&protocol.Entry{Kind: protocol.EntryDir, Mode: 0o755, ModTime: now, Path: []byte("sys")}, true, nil, nil)
		s.Put(&protocol.Entry{Kind: protocol.EntryFile, Mode: 0o644, ModTime: now, Size: 4096, Path: []byte("shrank")}, false, strings.NewReader("short"), []byte("/sys/shrank"))
		s.Put(&protocol.Entry{Kind: protocol.EntryFile, Mode: 0o644, ModTime: now, Size: 2, Path: []byte("ok")}, false, strings.NewReader("ok"), nil)
		w.WriteJSON(protocol.TypeCopyDone, &protocol.CopyDone{})
		pw.Close()
	}()
	var problems []problem
	r := &Receiver{R: protocol.NewReader(pr), Sink: &Dest{Path: []byte(out)}, SenderProblems: true,
		Problem: func(p []byte, msg string, skipped bool) {
			problems = append(problems, problem{string(p), msg, skipped})
		}}
	if _, err := r.Receive(); err != nil {
		t.Fatalf("receive: %v", err)
	}
	oneProblem(t, problems, "shrank while being copied")
	if _, err := os.Lstat(filepath.Join(out, "sys", "shrank")); err == nil {
		t.Error("the shrunk file landed")
	}
	if read(t, filepath.Join(out, "sys", "ok")) != "ok" {
		t.Error("the rest was not copied")
	}
}

// TestSourcePaths: a source written as a directory ("x/" or "x/.") is
// resolved as a path: a link to a directory is followed, a file is not a
// directory (as docker cp and cat f/ take them); without the slash a link
// is copied as a link.
func TestSourcePaths(t *testing.T) {
	src := t.TempDir()
	write(t, filepath.Join(src, "d", "a.txt"), "a", 0o644)
	write(t, filepath.Join(src, "f"), "f", 0o644)
	os.Symlink("d", filepath.Join(src, "ld"))
	os.Symlink("f", filepath.Join(src, "lf"))
	for _, c := range []struct {
		src     string
		problem string            // the one problem told, if any
		want    map[string]string // what lands, beneath the destination: a file's contents, "->T" a link, "/" a directory
	}{
		{src: "d/", want: map[string]string{"d": "/", "d/a.txt": "a"}},
		{src: "ld", want: map[string]string{"ld": "->d"}},
		{src: "ld/", want: map[string]string{"ld": "/", "ld/a.txt": "a"}},
		{src: "ld/.", want: map[string]string{"a.txt": "a"}},
		{src: "f", want: map[string]string{"f": "f"}},
		{src: "f/", problem: "not a directory"},
		{src: "f/.", problem: "not a directory"},
		{src: "lf/", problem: "not a directory"},
	} {
		out := t.TempDir()
		problems := copyLocal(t, false, &Dest{Path: []byte(out)}, src+"/"+c.src) // not Join: it drops the slash
		if c.problem != "" {
			oneProblem(t, problems, c.problem)
		} else {
			noProblems(t, problems)
		}
		got := map[string]string{}
		filepath.Walk(out, func(p string, fi fs.FileInfo, err error) error {
			rel, _ := filepath.Rel(out, p)
			switch {
			case err != nil || rel == ".":
			case fi.Mode()&fs.ModeSymlink != 0:
				l, _ := os.Readlink(p)
				got[rel] = "->" + l
			case fi.IsDir():
				got[rel] = "/"
			default:
				got[rel] = read(t, p)
			}
			return nil
		})
		if len(got) != len(c.want) {
			t.Errorf("%s: landed %v, want %v", c.src, got, c.want)
			continue
		}
		for k, v := range c.want {
			if got[k] != v {
				t.Errorf("%s: landed %v, want %v", c.src, got, c.want)
				break
			}
		}
	}
}

// TestProblemsNameTheDestination: a problem beneath a tree names the path
// as it is at the destination, whether the tree got a new name, went into
// a directory under its own, or gave its contents.
func TestProblemsNameTheDestination(t *testing.T) {
	out := t.TempDir()
	for _, c := range []struct {
		name     string
		dest     string
		contents bool
		want     string // where the tree's entries land
	}{
		{"a new name", out + "/new", false, out + "/new"},
		{"into a directory", out + "/", false, out + "/tree"},
		{"into a directory, no slash", out, false, out + "/tree"},
		{"its contents", out, true, out},
	} {
		problems, err := hostile(t, &Dest{Path: []byte(c.dest)}, func(w *protocol.Writer) {
			w.WriteFrame(protocol.TypeCopyRoot, entry(t, protocol.Entry{Kind: protocol.EntryDir, Mode: 0o755, Path: []byte("tree"), Contents: c.contents}))
			w.WriteFrame(protocol.TypeCopyEntry, entry(t, protocol.Entry{Kind: protocol.EntrySymlink, Mode: 0o777, Path: []byte("l"), Link: []byte("/")}))
			w.WriteFrame(protocol.TypeCopyEntry, entry(t, protocol.Entry{Kind: protocol.EntryFile, Mode: 0o644, Path: []byte("l/x")}))
			w.WriteJSON(protocol.TypeCopyEnd, &protocol.CopyEnd{})
			w.WriteJSON(protocol.TypeCopyDone, &protocol.CopyDone{})
		})
		if err != nil || len(problems) != 1 {
			t.Fatalf("%s: %+v, %v", c.name, problems, err)
		}
		if p := problems[0]; p.path != c.want+"/l/x" || !strings.Contains(p.msg, `"`+c.want+`/l"`) {
			t.Errorf("%s: %q: %s; want %q and %q", c.name, p.path, p.msg, c.want+"/l/x", c.want+"/l")
		}
		os.RemoveAll(filepath.Join(out, "l"))
	}
}

// TestMergeTakesTheSourcesModeAndTime: a directory merged into an existing
// one gives it its mode and modification time, as docker cp does, at every
// level; the destination itself keeps its own.
func TestMergeTakesTheSourcesModeAndTime(t *testing.T) {
	dir := t.TempDir()
	when := time.Date(2023, 1, 2, 3, 4, 5, 0, time.UTC)
	src := filepath.Join(dir, "src", "tree")
	write(t, filepath.Join(src, "sub", "f"), "f", 0o644)
	for _, c := range []struct {
		name string
		dest string // an existing directory
		src  string
		dirs []string // beneath dest: merged into, the source's mode and time wanted
		kept string   // beneath dest: keeps its own
	}{
		{"DEST/NAME", "a", src, []string{"tree", "tree/sub"}, "."},
		{"contents", "b", src + "/.", []string{"sub"}, "."},
	} {
		dest := filepath.Join(dir, c.dest)
		for _, d := range c.dirs {
			os.MkdirAll(filepath.Join(dest, d), 0o777)
			os.Chmod(filepath.Join(dest, d), 0o777)
		}
		os.Chmod(dest, 0o711)
		for _, d := range []string{src, filepath.Join(src, "sub")} {
			os.Chmod(d, 0o750)
			os.Chtimes(d, when, when)
		}
		noProblems(t, copyLocal(t, false, &Dest{Path: []byte(dest)}, c.src))
		for _, d := range c.dirs {
			fi, err := os.Stat(filepath.Join(dest, d))
			if err != nil || fi.Mode().Perm() != 0o750 || !fi.ModTime().Equal(when) {
				t.Errorf("%s: %s: %v %v, %v; want 0750 and %v", c.name, d, fi.Mode(), fi.ModTime(), err, when)
			}
		}
		if fi, _ := os.Stat(filepath.Join(dest, c.kept)); fi.Mode().Perm() != 0o711 {
			t.Errorf("%s: the destination itself: mode %v", c.name, fi.Mode())
		}
	}
}

// TestCountsWhatLanded: the receiver counts the files and links that
// landed and their bytes: not directories, not a file refused or dropped
// after its bytes came.
func TestCountsWhatLanded(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "t")
	write(t, filepath.Join(src, "sub", "ok"), "12345", 0o644)
	write(t, filepath.Join(src, "over-a-dir"), "1234567", 0o644)
	os.Symlink("sub/ok", filepath.Join(src, "link"))
	out := filepath.Join(dir, "out")
	os.MkdirAll(filepath.Join(out, "t", "over-a-dir"), 0o755)

	pr, pw := io.Pipe()
	go func() {
		w := protocol.NewWriter(pw)
		s := &Sender{W: w}
		s.Send(src)
		w.WriteJSON(protocol.TypeCopyDone, &protocol.CopyDone{})
		pw.Close()
	}()
	r := &Receiver{R: protocol.NewReader(pr), Sink: &Dest{Path: []byte(out)}}
	if _, err := r.Receive(); err != nil {
		t.Fatal(err)
	}
	if r.Files != 2 || r.Bytes != 5 || r.Problems != 1 {
		t.Fatalf("counted %d files, %d bytes, %d problems; want 2 (ok and link), 5, 1", r.Files, r.Bytes, r.Problems)
	}
}

// TestDestinationLinks: a destination that is a symbolic link to a file,
// or a dangling one, is written through (its target gets the contents or
// is made; the link stays), as docker cp does; a link another user
// planted in a sticky directory anyone may write to is not followed, as
// the kernel would not follow it for the user.
func TestDestinationLinks(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	write(t, src, "new", 0o644)
	for _, c := range []struct {
		name    string
		setup   func(d string) // makes d/dest
		problem string         // the one problem told, if any
		target  string         // where the contents land, beneath d; "" none
	}{
		{"a link to a file", func(d string) {
			write(t, filepath.Join(d, "file"), "old", 0o644)
			os.Symlink("file", filepath.Join(d, "dest"))
		}, "", "file"},
		{"a dangling link", func(d string) { os.Symlink("made", filepath.Join(d, "dest")) }, "", "made"},
		{"a chain, absolute", func(d string) {
			os.Mkdir(filepath.Join(d, "sub"), 0o755)
			os.Symlink(filepath.Join(d, "sub", "file"), filepath.Join(d, "mid"))
			os.Symlink("mid", filepath.Join(d, "dest"))
		}, "", "sub/file"},
		{"another's link in a sticky directory", func(d string) {
			os.Chmod(d, os.ModeSticky|0o777)
			write(t, filepath.Join(d, "file"), "old", 0o644)
			os.Symlink("file", filepath.Join(d, "dest"))
			os.Lchown(filepath.Join(d, "dest"), 65534, 65534)
		}, "another user's symbolic link", ""},
		// The kernel takes ../file from where the link really is,
		// real/deep, not from the text "sym/dest".
		{"a relative link beyond a linked directory", func(d string) {
			os.MkdirAll(filepath.Join(d, "real", "deep"), 0o755)
			os.Symlink("real/deep", filepath.Join(d, "sym"))
			os.Symlink("../file", filepath.Join(d, "real", "deep", "dest"))
			os.Symlink("sym/dest", filepath.Join(d, "dest"))
		}, "", "real/file"},
	} {
		d := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-"))
		os.Mkdir(d, 0o755)
		c.setup(d)
		link, _ := os.Readlink(filepath.Join(d, "dest"))
		problems := copyLocal(t, false, &Dest{Path: []byte(filepath.Join(d, "dest"))}, src)
		if c.problem != "" {
			oneProblem(t, problems, c.problem)
		} else {
			noProblems(t, problems)
		}
		if l, err := os.Readlink(filepath.Join(d, "dest")); err != nil || l != link {
			t.Errorf("%s: the link is now %q, %v; want it as it was, to %q", c.name, l, err, link)
		}
		if c.target != "file" {
			if _, err := os.Lstat(filepath.Join(d, "file")); err == nil && c.problem == "" {
				t.Errorf("%s: written to %s/file", c.name, d)
			}
		}
		if c.target != "" && read(t, filepath.Join(d, c.target)) != "new" {
			t.Errorf("%s: %s was not written", c.name, c.target)
		}
		if c.target == "" {
			if b, _ := os.ReadFile(filepath.Join(d, "file")); string(b) != "old" {
				t.Errorf("%s: the link's target was written", c.name)
			}
		}
	}
}

// TestHardLinks: names of one file inside the copied tree arrive as hard
// links of one file; a file whose other name is outside the tree is
// copied as a file; a link to a file that did not land is named, and
// never made to what was there before.
func TestHardLinks(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "t")
	write(t, filepath.Join(src, "a"), "shared", 0o644)
	write(t, filepath.Join(src, "d"), "alone", 0o644)
	write(t, filepath.Join(dir, "outside"), "out", 0o644)
	os.MkdirAll(filepath.Join(src, "sub"), 0o755)
	for _, l := range [][2]string{{"t/a", "t/b"}, {"t/a", "t/sub/c"}, {"outside", "t/x"}} {
		if err := os.Link(filepath.Join(dir, l[0]), filepath.Join(dir, l[1])); err != nil {
			t.Fatal(err)
		}
	}
	ino := func(p string) uint64 {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Ino
	}
	for _, c := range []struct {
		name     string
		before   func(out string) // what the destination holds first
		problems []string         // the names told, beneath out
		same     []string         // one file, beneath out
	}{
		{"a tree", func(string) {}, nil, []string{"t/a", "t/b", "t/sub/c"}},
		{"its first name refused", func(out string) {
			os.MkdirAll(filepath.Join(out, "t", "a", "dir"), 0o755)
		}, []string{"t/a", "t/b", "t/sub/c"}, nil},
	} {
		out := filepath.Join(dir, "out-"+strings.ReplaceAll(c.name, " ", "-"))
		os.Mkdir(out, 0o755)
		c.before(out)
		problems := copyLocalWith(t, Sender{Hardlinks: true}, &Dest{Path: []byte(out)}, src)
		var named []string
		for _, p := range problems {
			rel, _ := filepath.Rel(out, p.path)
			named = append(named, rel)
		}
		if strings.Join(named, " ") != strings.Join(c.problems, " ") {
			t.Errorf("%s: problems %+v, want %v named", c.name, problems, c.problems)
		}
		for _, p := range c.same {
			if ino(filepath.Join(out, p)) != ino(filepath.Join(out, c.same[0])) || read(t, filepath.Join(out, p)) != "shared" {
				t.Errorf("%s: %s is not a name of %s", c.name, p, c.same[0])
			}
		}
		if ino(filepath.Join(out, "t", "x")) == ino(filepath.Join(dir, "outside")) || read(t, filepath.Join(out, "t", "x")) != "out" {
			t.Errorf("%s: x, whose other name is outside the tree, is not a copy", c.name)
		}
		if ino(filepath.Join(out, "t", "d")) == ino(filepath.Join(out, "t", "x")) || read(t, filepath.Join(out, "t", "d")) != "alone" {
			t.Errorf("%s: d", c.name)
		}
	}
}

// TestHardLinkToADroppedFile: a hard link whose file was dropped (it
// shrank) is named, and not made to the older file of that name that the
// destination holds.
func TestHardLinkToADroppedFile(t *testing.T) {
	out := t.TempDir()
	write(t, filepath.Join(out, "t", "a"), "old", 0o644)
	problems, err := hostile(t, &Dest{Path: []byte(out)}, func(w *protocol.Writer) {
		w.WriteFrame(protocol.TypeCopyRoot, entry(t, protocol.Entry{Kind: protocol.EntryDir, Mode: 0o755, Path: []byte("t")}))
		w.WriteFrame(protocol.TypeCopyEntry, entry(t, protocol.Entry{Kind: protocol.EntryFile, Mode: 0o644, Size: 10, Path: []byte("a")}))
		w.WriteFrame(protocol.TypeCopyData, []byte("new"))
		w.WriteJSON(protocol.TypeCopyEnd, &protocol.CopyEnd{Error: "it shrank"})
		w.WriteFrame(protocol.TypeCopyEntry, entry(t, protocol.Entry{Kind: protocol.EntryHardlink, Path: []byte("b"), Link: []byte("a")}))
		w.WriteJSON(protocol.TypeCopyDone, &protocol.CopyDone{})
	})
	if err != nil {
		t.Fatal(err)
	}
	oneProblem(t, problems, "not a file that this copy wrote")
	if _, err := os.Lstat(filepath.Join(out, "t", "b")); err == nil {
		t.Fatal("b was made, a name of the older file")
	}
}

// TestHostileHardLinks: a hard link that names a path outside the tree,
// or through a link, is refused; nothing outside gets another name.
func TestHostileHardLinks(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	os.Mkdir(out, 0o755)
	write(t, filepath.Join(dir, "secret"), "s", 0o600)
	root := entry(t, protocol.Entry{Kind: protocol.EntryDir, Mode: 0o755, Path: []byte("evil")})
	hard := func(p, to string) []byte {
		return entry(t, protocol.Entry{Kind: protocol.EntryHardlink, Path: []byte(p), Link: []byte(to)})
	}
	for name, link := range map[string][]byte{"dot dot": hard("h", "../../secret"), "absolute": hard("h", filepath.Join(dir, "secret"))} {
		_, err := hostile(t, &Dest{Path: []byte(out)}, func(w *protocol.Writer) {
			w.WriteFrame(protocol.TypeCopyRoot, root)
			w.WriteFrame(protocol.TypeCopyEntry, link)
			w.WriteJSON(protocol.TypeCopyDone, &protocol.CopyDone{})
		})
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	problems, err := hostile(t, &Dest{Path: []byte(out)}, func(w *protocol.Writer) {
		w.WriteFrame(protocol.TypeCopyRoot, root)
		w.WriteFrame(protocol.TypeCopyEntry, entry(t, protocol.Entry{Kind: protocol.EntrySymlink, Mode: 0o777, Path: []byte("l"), Link: []byte(dir)}))
		w.WriteFrame(protocol.TypeCopyEntry, hard("h", "l/secret"))
		w.WriteJSON(protocol.TypeCopyDone, &protocol.CopyDone{})
	})
	if err != nil || len(problems) != 1 || !strings.Contains(problems[0].msg, "not a file that this copy wrote") {
		t.Fatalf("through a link: %+v, %v", problems, err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "secret")); fi.Sys().(*syscall.Stat_t).Nlink != 1 {
		t.Fatal("the file outside got another name")
	}
}

// TestStickyDestinationLinks: another user's link planted as DEST in a
// sticky directory anyone may write to is not followed, whatever it leads
// to and whatever is copied: a directory, a file into it, several sources
// into it. The link of the directory's owner is followed.
func TestStickyDestinationLinks(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "src", "f"), "new", 0o644)
	write(t, filepath.Join(dir, "g"), "new", 0o644)
	for _, c := range []struct {
		name  string
		srcs  []string
		multi bool
	}{
		{"a file", []string{"g"}, false},
		{"a directory", []string{"src"}, false},
		{"a directory's contents", []string{"src/."}, false},
		{"several sources", []string{"g", "src"}, true},
	} {
		for _, owner := range []int{65534, 0} {
			d := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-")+"-"+strconv.Itoa(owner))
			os.Mkdir(d, 0o777)
			os.Chmod(d, os.ModeSticky|0o777)
			victim := filepath.Join(dir, "victim-"+filepath.Base(d))
			os.Mkdir(victim, 0o700)
			os.Symlink(victim, filepath.Join(d, "dest"))
			os.Lchown(filepath.Join(d, "dest"), owner, owner)
			var srcs []string
			for _, s := range c.srcs {
				srcs = append(srcs, dir+"/"+s)
			}
			problems := copyLocal(t, false, &Dest{Path: []byte(filepath.Join(d, "dest")), Sources: len(c.srcs)}, srcs...)
			landed, _ := os.ReadDir(victim)
			if owner == 0 {
				if len(problems) > 0 || len(landed) == 0 {
					t.Errorf("%s, the owner's link: problems %+v, landed %v", c.name, problems, landed)
				}
				continue
			}
			if len(problems) != len(c.srcs) || !strings.Contains(problems[0].msg, "another user's symbolic link") {
				t.Errorf("%s: problems %+v", c.name, problems)
			}
			if len(landed) > 0 {
				t.Errorf("%s: written through another's link: %v", c.name, landed)
			}
		}
	}
}

// TestHardLinksOnlyToWhatLanded: a hard link may name only a file this
// copy wrote in the tree: never a file the destination held before, even
// beneath a directory the copy merged into, nor a name whose file was
// replaced since it was written.
func TestHardLinksOnlyToWhatLanded(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	write(t, filepath.Join(out, "t", "private", "secret"), "s", 0o600)
	write(t, filepath.Join(out, "t", "top"), "top", 0o600)
	hard := func(p, to string) protocol.Entry {
		return protocol.Entry{Kind: protocol.EntryHardlink, Path: []byte(p), Link: []byte(to)}
	}
	dirEntry := func(p string) protocol.Entry {
		return protocol.Entry{Kind: protocol.EntryDir, Mode: 0o755, Path: []byte(p)}
	}
	file := func(p string) protocol.Entry {
		return protocol.Entry{Kind: protocol.EntryFile, Mode: 0o644, Size: 1, Path: []byte(p)}
	}
	for _, c := range []struct {
		name    string
		entries []protocol.Entry // after the root t; each file's one byte follows it
		leak    string           // the name that must not be made, beneath out/t
	}{
		{"a file there before", []protocol.Entry{dirEntry("public"), hard("public/leak", "private/secret")}, "public/leak"},
		{"in a merged directory", []protocol.Entry{dirEntry("private"), hard("private/leak", "private/secret")}, "private/leak"},
		{"at the top", []protocol.Entry{hard("leak", "top")}, "leak"},
		{"a name a link took", []protocol.Entry{file("a"), {Kind: protocol.EntrySymlink, Mode: 0o777, Path: []byte("a"), Link: []byte("private/secret")}, hard("leak", "a")}, "leak"},
	} {
		problems, err := hostile(t, &Dest{Path: []byte(out)}, func(w *protocol.Writer) {
			w.WriteFrame(protocol.TypeCopyRoot, entry(t, dirEntry("t")))
			for _, e := range c.entries {
				w.WriteFrame(protocol.TypeCopyEntry, entry(t, e))
				if e.Kind == protocol.EntryFile {
					w.WriteFrame(protocol.TypeCopyData, []byte("x"))
					w.WriteJSON(protocol.TypeCopyEnd, &protocol.CopyEnd{})
				}
			}
			w.WriteJSON(protocol.TypeCopyDone, &protocol.CopyDone{})
		})
		if err != nil || len(problems) != 1 || !strings.HasSuffix(problems[0].path, c.leak) || !strings.Contains(problems[0].msg, "not a file that this copy wrote") {
			t.Errorf("%s: %+v, %v", c.name, problems, err)
		}
		if _, err := os.Lstat(filepath.Join(out, "t", c.leak)); err == nil {
			t.Errorf("%s: %s was made", c.name, c.leak)
		}
		for _, f := range []string{"private/secret", "top"} {
			if fi, _ := os.Stat(filepath.Join(out, "t", f)); fi.Sys().(*syscall.Stat_t).Nlink != 1 {
				t.Fatalf("%s: %s got another name", c.name, f)
			}
		}
	}
}

// TestHardLinkToAReplacedFile: the destination checks that the file a
// hard link names is still the one it wrote: another put there since
// (a user of the destination's directory) gets no new name.
func TestHardLinkToAReplacedFile(t *testing.T) {
	out := t.TempDir()
	write(t, filepath.Join(out, "other"), "other", 0o600)
	d := &Dest{Path: []byte(out)}
	if _, err := d.Root(&protocol.Entry{Kind: protocol.EntryDir, Mode: 0o755, Path: []byte("t")}); err != nil {
		t.Fatal(err)
	}
	f, err := d.File(&protocol.Entry{Kind: protocol.EntryFile, Mode: 0o644, Path: []byte("a")})
	if err != nil || f.Commit() != nil {
		t.Fatalf("the file: %v", err)
	}
	if err := os.Rename(filepath.Join(out, "other"), filepath.Join(out, "t", "a")); err != nil {
		t.Fatal(err)
	}
	err = d.Hardlink(&protocol.Entry{Kind: protocol.EntryHardlink, Path: []byte("b"), Link: []byte("a")}, f.(*destFile).identity())
	if err == nil || !strings.Contains(err.Error(), "no longer the file this copy wrote") {
		t.Fatalf("%v, want a refusal", err)
	}
	if err := d.Finish(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(out, "t", "b")); err == nil {
		t.Fatal("b was made")
	}
}

// TestMergedModes: a directory merged into keeps the permission bits it
// lacks off and its sticky and set-group-ID bits on, whatever the source
// says, so that a sender cannot open ~/.ssh to everyone or take the
// sticky bit off /tmp; the source's bits narrow it. With -a it takes the
// source's mode as it is. Either way it takes the source's time.
func TestMergedModes(t *testing.T) {
	dir := t.TempDir()
	when := time.Date(2022, 3, 4, 5, 6, 7, 0, time.UTC)
	for _, c := range []struct {
		name     string
		had, src fs.FileMode
		archive  bool
		want     fs.FileMode
	}{
		{"not widened", 0o700, 0o777, false, 0o700},
		{"narrowed", 0o777, 0o750, false, 0o750},
		{"sticky kept", os.ModeSticky | 0o777, 0o777, false, os.ModeSticky | 0o777},
		{"setgid kept", os.ModeSetgid | 0o775, 0o755, false, os.ModeSetgid | 0o755},
		{"no bits added", 0o755, os.ModeSticky | os.ModeSetgid | 0o755, false, 0o755},
		{"-a widens", 0o700, 0o777, true, 0o777},
		{"-a clears sticky", os.ModeSticky | 0o777, 0o777, true, 0o777},
	} {
		d := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-"))
		src := filepath.Join(d, "src", "tree")
		write(t, filepath.Join(src, "sub", "f"), "f", 0o644)
		os.Chmod(filepath.Join(src, "sub"), c.src)
		os.Chtimes(filepath.Join(src, "sub"), when, when)
		merged := filepath.Join(d, "out", "tree", "sub")
		os.MkdirAll(merged, 0o700)
		os.Chmod(merged, c.had)
		noProblems(t, copyLocal(t, false, &Dest{Path: []byte(filepath.Join(d, "out")), KeepOwners: c.archive}, src))
		fi, err := os.Stat(merged)
		if err != nil || fi.Mode()&^fs.ModeDir != c.want || !fi.ModTime().Equal(when) {
			t.Errorf("%s: %v %v, %v; want %v and %v", c.name, fi.Mode(), fi.ModTime(), err, c.want, when)
		}
	}
}

// TestMergedDirectoriesRememberedOnce: a directory a sender names again
// and again is remembered once, and what is remembered for the end stays
// within its bound however many directories come.
func TestMergedDirectoriesRememberedOnce(t *testing.T) {
	out := t.TempDir()
	d := &Dest{Path: []byte(out)}
	if _, err := d.Root(&protocol.Entry{Kind: protocol.EntryDir, Mode: 0o755, Path: []byte("t")}); err != nil {
		t.Fatal(err)
	}
	for range 10000 {
		if err := d.Dir(&protocol.Entry{Kind: protocol.EntryDir, Mode: 0o755, Path: []byte("a")}); err != nil {
			t.Fatal(err)
		}
	}
	if len(d.dirs) != 2 { // t and a
		t.Fatalf("%d directories remembered for t and a", len(d.dirs))
	}
	long := strings.Repeat("x", 240) // fewer directories to make to reach the bound
	for i := 0; d.dirMem+len(long)+8+madeDirCost <= maxMadeDirBytes; i++ {
		if err := d.Dir(&protocol.Entry{Kind: protocol.EntryDir, Mode: 0o755, Path: fmt.Appendf(nil, "%s%07d", long, i)}); err != nil {
			t.Fatal(err)
		}
	}
	n := len(d.dirs)
	d.Dir(&protocol.Entry{Kind: protocol.EntryDir, Mode: 0o755, Path: []byte("past-the-bound")})
	if len(d.dirs) != n || d.dirMem > maxMadeDirBytes {
		t.Fatalf("%d directories, %d bytes remembered, past the bound of %d", len(d.dirs), d.dirMem, maxMadeDirBytes)
	}
	if err := d.Finish(); err != nil {
		t.Fatal(err)
	}
}

// TestDirectoryNotFinishedIsNamed: a directory whose mode and time could
// not be set at the end is named, not the destination; a tree's such
// problems are told at the end, not as the next root's.
func TestDirectoryNotFinishedIsNamed(t *testing.T) {
	out := t.TempDir()
	problems, err := hostile(t, &Dest{Path: []byte(out), Sources: 2}, func(w *protocol.Writer) {
		w.WriteFrame(protocol.TypeCopyRoot, entry(t, protocol.Entry{Kind: protocol.EntryDir, Mode: 0o755, Path: []byte("t")}))
		w.WriteFrame(protocol.TypeCopyEntry, entry(t, protocol.Entry{Kind: protocol.EntryDir, Mode: 0o755, Path: []byte("sub")}))
		// Once the next entry is read, sub is made; then it goes, and its
		// mode cannot be set at the end.
		w.WriteFrame(protocol.TypeCopyEntry, entry(t, protocol.Entry{Kind: protocol.EntryDir, Mode: 0o755, Path: []byte("sub2")}))
		os.Remove(filepath.Join(out, "t", "sub"))
		w.WriteFrame(protocol.TypeCopyRoot, entry(t, protocol.Entry{Kind: protocol.EntrySymlink, Mode: 0o777, Path: []byte("l"), Link: []byte("x")}))
		w.WriteJSON(protocol.TypeCopyDone, &protocol.CopyDone{})
	})
	if err != nil || len(problems) != 1 || problems[0].path != filepath.Join(out, "t", "sub") {
		t.Fatalf("%+v, %v; want %s named", problems, err, filepath.Join(out, "t", "sub"))
	}
	if _, err := os.Lstat(filepath.Join(out, "l")); err != nil {
		t.Fatalf("the next root: %v", err)
	}
}
