package bake

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestOutputReadableByOthers: an OCI layout gets the modes the umask
// allows, as skopeo writes them, so another user can read it.
func TestOutputReadableByOthers(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in"), filepath.Join(dir, "out")
	writeOCILayout(t, baseImage(t, "amd64", true), in)
	if err := bake(in, out, Options{}); err != nil {
		t.Fatal(err)
	}
	filepath.WalkDir(out, func(p string, d fs.DirEntry, err error) error {
		info, _ := d.Info()
		want := fs.FileMode(0o644)
		if d.IsDir() {
			want = 0o755
		}
		if info.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", p, info.Mode().Perm(), want)
		}
		return nil
	})
}

// goodInputs writes a base image to dir as an OCI layout (good-oci) and
// as a docker archive (good.tar), the inputs the tests of outputs bake.
func goodInputs(t *testing.T, dir string) (layout, docker string) {
	t.Helper()
	layout, docker = filepath.Join(dir, "good-oci"), filepath.Join(dir, "good.tar")
	writeOCILayout(t, baseImage(t, "amd64", true), layout)
	writeDocker(t, baseImage(t, "amd64", false), docker)
	return layout, docker
}

// TestOutputPaths: trailing slashes (cork bake a-oci/ b-oci/), outputs that
// exist, directories where files go and the other way round, a missing
// output directory: each decided before the input is read.
func TestOutputPaths(t *testing.T) {
	dir := t.TempDir()
	layoutIn, dockerIn := goodInputs(t, dir)

	if err := bake(layoutIn+"/", filepath.Join(dir, "out-oci")+"/", Options{}); err != nil {
		t.Fatalf("trailing slashes: %v", err)
	}
	readBaked(t, filepath.Join(dir, "out-oci"), OCILayout)

	os.WriteFile(filepath.Join(dir, "taken.tar"), []byte("keep me"), 0o644)
	os.Mkdir(filepath.Join(dir, "a-dir"), 0o755)
	for _, tc := range []struct {
		name, in, out string
		opts          Options
		text          string
	}{
		{"existing file", dockerIn, filepath.Join(dir, "taken.tar"), Options{}, "exists; give --force"},
		{"existing layout", layoutIn, filepath.Join(dir, "out-oci"), Options{}, "exists; give --force"},
		{"directory for a tarball", dockerIn, filepath.Join(dir, "a-dir"), Options{}, "is a directory"},
		{"file for a layout", layoutIn, filepath.Join(dir, "taken.tar"), Options{Force: true}, "is a file"},
		{"missing directory", "-", filepath.Join(dir, "no", "such", "out.tar"), Options{}, "output directory " + filepath.Join(dir, "no", "such") + " does not exist"},
		{"layout to stdout", layoutIn, "-", Options{}, "cannot go to stdout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			read := false
			tc.opts.Stdin = readerFunc(func([]byte) (int, error) { read = true; return 0, os.ErrClosed })
			err := bake(tc.in, tc.out, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("got %v, want %q", err, tc.text)
			}
			if read {
				t.Fatal("the input was read before the output was checked")
			}
		})
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "taken.tar")); string(b) != "keep me" {
		t.Fatal("a refused bake changed the existing file")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".cork-bake-*")); len(left) > 0 {
		t.Fatalf("staging left behind: %v", left)
	}

	// --force replaces a tar and a layout.
	tarball, _ := os.ReadFile(dockerIn)
	os.WriteFile(filepath.Join(dir, "taken.tar"), tarball, 0o644)
	if err := bake(dockerIn, filepath.Join(dir, "taken.tar"), Options{Force: true}); err != nil {
		t.Fatal(err)
	}
	readBaked(t, filepath.Join(dir, "taken.tar"), Docker)
	if err := bake(layoutIn, filepath.Join(dir, "out-oci"), Options{Force: true}); err != nil {
		t.Fatal(err)
	}
	readBaked(t, filepath.Join(dir, "out-oci"), OCILayout)
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// TestRebakeReplacesAgent: baking a baked image replaces its corkd layer
// instead of stacking a second one, and says so.
func TestRebakeReplacesAgent(t *testing.T) {
	dir := t.TempDir()
	base := baseImage(t, "arm64", true)
	in, once, twice := filepath.Join(dir, "in"), filepath.Join(dir, "once"), filepath.Join(dir, "twice")
	writeOCILayout(t, base, in)
	if err := bake(in, once, Options{}); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	if err := bake(once, twice, Options{Log: &log}); err != nil {
		t.Fatal(err)
	}
	b := readBaked(t, twice, OCILayout)
	checkBaked(t, base, b, "arm64")
	cf, _ := b.img.ConfigFile()
	n := 0
	for _, h := range cf.History {
		if strings.HasPrefix(h.CreatedBy, historyPrefix) {
			n++
		}
	}
	if n != 1 || len(cf.RootFS.DiffIDs) != len(cf.History) {
		t.Fatalf("%d corkd history entries, %d diff ids for %d history entries", n, len(cf.RootFS.DiffIDs), len(cf.History))
	}
	if !strings.Contains(log.String(), "replacing corkd "+testVersion) {
		t.Fatalf("log %q does not say the agent was replaced", log.String())
	}
}

// TestHistoryDated: the added layer's history entry has the bake's date
// (SOURCE_DATE_EPOCH through Options.Created), not 1970.
func TestHistoryDated(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in")
	writeOCILayout(t, baseImage(t, "amd64", true), in)
	before := time.Now().Add(-time.Second)
	if err := bake(in, filepath.Join(dir, "now"), Options{}); err != nil {
		t.Fatal(err)
	}
	fixed := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := bake(in, filepath.Join(dir, "fixed"), Options{Created: fixed}); err != nil {
		t.Fatal(err)
	}
	last := func(out string) time.Time {
		cf, _ := readBaked(t, out, OCILayout).img.ConfigFile()
		return cf.History[len(cf.History)-1].Created.Time
	}
	if got := last(filepath.Join(dir, "now")); got.Before(before) || got.After(time.Now()) {
		t.Errorf("history dated %v, want now", got)
	}
	if got := last(filepath.Join(dir, "fixed")); !got.Equal(fixed) {
		t.Errorf("history dated %v, want %v", got, fixed)
	}
}

// TestForceReplacesOnlyImages: --force replaces an OCI layout or a tar,
// and nothing else: a source tree or a text file in the way is named and
// left as it was (issue 25 item 5: cork bake -f good-oci myproject
// replaced the project with an image).
func TestForceReplacesOnlyImages(t *testing.T) {
	dir := t.TempDir()
	layoutIn, dockerIn := goodInputs(t, dir)
	project := filepath.Join(dir, "myproject")
	os.MkdirAll(filepath.Join(project, "cmd"), 0o755)
	os.WriteFile(filepath.Join(project, "go.mod"), []byte("module example.com/p\n"), 0o644)
	notes := filepath.Join(dir, "notes.txt")
	os.WriteFile(notes, []byte("keep me\n"), 0o644)
	source := filepath.Join(dir, "src.tar")
	f, _ := os.Create(source)
	writeTar(f, map[string][]byte{"src/main.go": []byte("package main\n")})
	f.Close()
	sourceData, _ := os.ReadFile(source)
	for _, tc := range []struct{ in, out, text string }{
		{layoutIn, project, "a directory that is not an OCI layout (it holds 2 entries: cmd, go.mod)"},
		{dockerIn, notes, "a file that is not a tar archive"},
		{dockerIn, source, "a tar archive that is not an image (its first entry is src/main.go)"},
	} {
		err := bake(tc.in, tc.out, Options{Force: true})
		if err == nil || !strings.Contains(err.Error(), tc.text) {
			t.Fatalf("got %v, want %q", err, tc.text)
		}
	}
	if b, err := os.ReadFile(filepath.Join(project, "go.mod")); err != nil || string(b) != "module example.com/p\n" {
		t.Fatalf("the project was changed: %q, %v", b, err)
	}
	if b, _ := os.ReadFile(notes); string(b) != "keep me\n" {
		t.Fatal("the file was changed")
	}
	if b, _ := os.ReadFile(source); !bytes.Equal(b, sourceData) {
		t.Fatal("the source tarball was changed")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".cork-bake-*")); len(left) > 0 {
		t.Fatalf("staging left behind: %v", left)
	}
}

// TestCommitKeepsWhatAppeared: an output that appears while the image is
// baked (its input a slow pipe) is not replaced without --force, and with
// it only when it is an image, as at the start: the commit renamed a
// directory away and deleted it, or overwrote a file, whatever it was.
func TestCommitKeepsWhatAppeared(t *testing.T) {
	dir := t.TempDir()
	layoutIn, dockerIn := goodInputs(t, dir)
	project := func(p string) {
		os.MkdirAll(filepath.Join(p, "cmd"), 0o755)
		os.WriteFile(filepath.Join(p, "go.mod"), []byte("keep me\n"), 0o644)
	}
	notes := func(p string) { os.WriteFile(p, []byte("keep me\n"), 0o644) }
	image := func(p string) {
		data, _ := os.ReadFile(dockerIn)
		os.WriteFile(p, data, 0o644)
	}
	for _, tc := range []struct {
		name   string
		in     string
		force  bool
		appear func(string)
		kept   string // the file that must still say "keep me", "" if replaced
		text   string
	}{
		{"layout, no force", layoutIn, false, project, "go.mod", "appeared while the image was baked; give --force"},
		{"file, no force", dockerIn, false, notes, ".", "appeared while the image was baked; give --force"},
		{"layout, force, not an image", layoutIn, true, project, "go.mod", "not an OCI layout"},
		{"file, force, not an image", dockerIn, true, notes, ".", "not a tar archive"},
		{"file, force, an image", dockerIn, true, image, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			err := bake(tc.in, out, Options{Force: tc.force, Agent: func(arch string) (string, error) {
				tc.appear(out) // as the image's metadata is read, after the start's checks
				return agents[arch], nil
			}})
			if tc.text == "" {
				if err != nil {
					t.Fatal(err)
				}
				readBaked(t, out, Docker)
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("got %v, want %q", err, tc.text)
			}
			kept := out
			if tc.kept != "." {
				kept = filepath.Join(out, tc.kept)
			}
			if b, _ := os.ReadFile(kept); string(b) != "keep me\n" {
				t.Fatalf("what appeared was changed: %q", b)
			}
			if left, _ := filepath.Glob(filepath.Join(filepath.Dir(out), ".cork-bake-*")); len(left) > 0 {
				t.Fatalf("staging left behind: %v", left)
			}
		})
	}
}
