package bake

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// countWriter counts the bytes written to it.
type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// sparseArchive is an OCI archive's start: one PAX sparse entry (GNU
// sparse 1.0) a few hundred bytes long that expands to realSize bytes.
// Go's tar writer leaves GNU.sparse records out, so the PAX header is
// written as a file and retyped.
func sparseArchive(t *testing.T, realSize int64) []byte {
	t.Helper()
	var records bytes.Buffer
	for _, kv := range [][2]string{{"GNU.sparse.major", "1"}, {"GNU.sparse.minor", "0"},
		{"GNU.sparse.name", "blobs/sha256/" + strings.Repeat("ab", 32)}, {"GNU.sparse.realsize", strconv.FormatInt(realSize, 10)}} {
		rec := " " + kv[0] + "=" + kv[1] + "\n"
		n := len(rec) + 2
		if len(strconv.Itoa(n)) > 2 {
			n++
		}
		records.WriteString(strconv.Itoa(n) + rec)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "PaxHeaders/x", Size: int64(records.Len()), Mode: 0o644, Format: tar.FormatUSTAR})
	tw.Write(records.Bytes())
	tw.Flush()
	retype(buf.Bytes()[:512], tar.TypeXHeader, nil)
	sparseMap := make([]byte, 512) // one data block of 1 byte, at the end
	copy(sparseMap, "1\n"+strconv.FormatInt(realSize-1, 10)+"\n1\n")
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "GNUSparseFile.0/x", Size: 513, Mode: 0o644, Format: tar.FormatUSTAR})
	tw.Write(append(sparseMap, 'x'))
	tw.Close()
	return buf.Bytes()
}

// gnuSparseArchive holds one old-GNU sparse entry ('S'): a header whose
// sparse map, in the header itself, puts 1 byte at realSize-1.
func gnuSparseArchive(t *testing.T, realSize int64) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "blobs/sha256/" + strings.Repeat("cd", 32), Size: 1, Mode: 0o644, Format: tar.FormatGNU})
	tw.Write([]byte{'x'})
	tw.Close()
	b := buf.Bytes()
	retype(b[:512], tar.TypeGNUSparse, func(hdr []byte) {
		octal := func(off, n int, v int64) { copy(hdr[off:off+n], strconv.FormatInt(v, 8)+"\x00") }
		octal(386, 12, realSize-1) // sparse entry 0: offset
		octal(398, 12, 1)          // and length
		octal(483, 12, realSize)   // the real size
	})
	return b
}

// retype changes a tar header block's type, lets edit change more, and
// fixes its checksum.
func retype(hdr []byte, flag byte, edit func([]byte)) {
	hdr[156] = flag
	if edit != nil {
		edit(hdr)
	}
	copy(hdr[148:156], "        ")
	var sum int64
	for _, c := range hdr {
		sum += int64(c)
	}
	copy(hdr[148:156], fmt.Sprintf("%06o\x00 ", sum))
}

// TestSparseEntriesRefused: a sparse entry of a few hundred bytes that
// claims 256 MiB is refused before a byte of it is written (issue 25 item
// 1: Go's tar reader expands it, and bake wrote the zeros).
func TestSparseEntriesRefused(t *testing.T) {
	const claimed = 256 << 20
	for name, data := range map[string][]byte{"pax": sparseArchive(t, claimed), "gnu": gnuSparseArchive(t, claimed)} {
		t.Run(name, func(t *testing.T) {
			// Go's reader does see it as that large.
			tr := tar.NewReader(bytes.NewReader(data))
			if h, err := tr.Next(); err != nil || h.Size != claimed {
				t.Fatalf("the crafted entry reads as %+v, %v", h, err)
			}
			var out countWriter
			err := bake("-", "-", Options{Stdin: bytes.NewReader(data), Stdout: &out, Format: OCIArchive})
			t.Logf("refused: %v", err)
			if out.n > 64<<10 {
				t.Fatalf("wrote %d bytes from a %d-byte input", out.n, len(data))
			}
			if err == nil || !strings.Contains(err.Error(), "sparse") {
				t.Fatalf("got %v, want a refusal naming the sparse entry", err)
			}
		})
	}
}

// childEnv, when set, makes the test binary a bake of stdin to the
// output it names, so that a test can measure a bake's peak memory
// (its rusage) or signal it.
const childEnv = "CORK_BAKE_TEST_CHILD"

// runChild bakes stdin to os.Getenv(childEnv), prints its peak resident
// memory (VmHWM: the rusage of a child counts its parent's memory from
// before the exec) and exits; TestMain calls it in a child.
func runChild() {
	agents["amd64"] = os.Getenv(childEnv + "_AGENT")
	err := bake("-", os.Getenv(childEnv), Options{Stdin: os.Stdin, Stdout: io.Discard, Format: Format(os.Getenv(childEnv + "_FORMAT"))})
	status, _ := os.ReadFile("/proc/self/status")
	for line := range strings.Lines(string(status)) {
		if kb, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			fmt.Print(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(kb), "kB")))
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// bakeInChild bakes what feed writes in a child process and returns its
// error output and peak resident memory.
func bakeInChild(t *testing.T, out string, format Format, feed func(io.Writer)) (string, int64) {
	t.Helper()
	if raceEnabled {
		t.Skip("the race detector multiplies a bake's memory; run without -race")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+out, childEnv+"_AGENT="+agents["amd64"], childEnv+"_FORMAT="+string(format))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		feed(stdin)
		stdin.Close()
	}()
	cmd.Wait()
	kb, err := strconv.ParseInt(stdout.String(), 10, 64)
	if err != nil {
		t.Fatalf("no peak memory from the child: %q, %s", stdout.String(), stderr.String())
	}
	return stderr.String(), kb << 10
}

// TestNamesCountAgainstMemory: names and link targets are held for the
// whole bake, so they count against its 64 MiB like small files do (issue
// 25 item 2: 2,000 unique 1 MiB PAX names held 3.2 GB). 40,000 entries
// with 4,000-byte names and links, 240 MB of names, are refused with the
// bake's peak memory far below them.
func TestNamesCountAgainstMemory(t *testing.T) {
	long := func(i int, c string) string { return fmt.Sprintf("%08d", i) + strings.Repeat(c, 3990) }
	msg, rss := bakeInChild(t, filepath.Join(t.TempDir(), "out"), "", func(w io.Writer) {
		tw := tar.NewWriter(w)
		for i := range 20000 {
			if tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: long(i, "f"), Mode: 0o644}) != nil {
				return // the bake stopped reading
			}
			if tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: long(i, "l"), Linkname: long(i, "t"), Mode: 0o777}) != nil {
				return
			}
		}
		tw.Close()
	})
	t.Logf("peak %d MiB: %s", rss>>20, msg)
	if rss > 256<<20 {
		t.Fatalf("the bake peaked at %d MiB", rss>>20)
	}
	if !strings.Contains(msg, "names") {
		t.Fatalf("got %q, want a refusal saying the names are too many", msg)
	}

	// One name longer than any path is refused as it comes.
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: strings.Repeat("n", 1<<20-1024), Mode: 0o644})
	tw.Close()
	err := bake("-", "-", Options{Stdin: &buf, Stdout: io.Discard})
	if err == nil || !strings.Contains(err.Error(), "names of at most 4096 bytes") || len(err.Error()) > 400 {
		t.Fatalf("got %v, want a short refusal of the long name", err)
	}
}

// TestStaleStagingCleaned: a bake removes the staging areas a killed bake
// left, beside its output and in TMPDIR, and none that a bake still owns:
// one whose pid is alive, or whose lock is held (its owner in another pid
// namespace) (issue 25 item 6).
func TestStaleStagingCleaned(t *testing.T) {
	dir, tmp := t.TempDir(), t.TempDir()
	t.Setenv("TMPDIR", tmp)
	pidMax, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		t.Skip(err)
	}
	dead, _ := strconv.Atoi(strings.TrimSpace(string(pidMax)))
	dead++ // no process has it
	area := func(parent string, pid int, name string) string {
		p := filepath.Join(parent, fmt.Sprintf("%s%d-%s", stagingPrefix, pid, name))
		os.MkdirAll(filepath.Join(p, "spool"), 0o700)
		os.WriteFile(filepath.Join(p, "spool", "spool-1"), make([]byte, 1<<20), 0o600)
		return p
	}
	var stale, kept []string
	for _, parent := range []string{dir, tmp} {
		stale = append(stale, area(parent, dead, "killed"))
		kept = append(kept, area(parent, os.Getpid(), "running"))
		locked := area(parent, dead, "elsewhere")
		f, err := os.Open(locked)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			t.Fatal(err)
		}
		kept = append(kept, locked)
	}
	in := filepath.Join(t.TempDir(), "in.tar")
	writeDocker(t, baseImage(t, "amd64", false), in)
	if err := bake(in, filepath.Join(dir, "out.tar"), Options{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range stale {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("stale %s was left", p)
		}
	}
	for _, p := range kept {
		if _, err := os.Stat(filepath.Join(p, "spool", "spool-1")); err != nil {
			t.Errorf("%s, in use, was removed", p)
		}
	}
}

// TestEntrySizeCappedByDescriptor: an archive entry for a blob whose size
// the metadata before it gives is refused, before a byte of it is written,
// when it claims more (issue 25 item 1).
func TestEntrySizeCappedByDescriptor(t *testing.T) {
	dir, m := layoutWithIndex(t)
	var manifest v1.Manifest
	mdata, _ := os.ReadFile(filepath.Join(dir, "blobs", "sha256", m.Digest.Hex))
	json.Unmarshal(mdata, &manifest)
	var archive bytes.Buffer
	tw := tar.NewWriter(&archive)
	add := func(name string, size int64, r io.Reader) {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o644})
		io.Copy(tw, r)
	}
	for _, name := range []string{"oci-layout", "index.json", "blobs/sha256/" + m.Digest.Hex, "blobs/sha256/" + manifest.Config.Digest.Hex} {
		data, _ := os.ReadFile(filepath.Join(dir, name))
		add(name, int64(len(data)), bytes.NewReader(data))
	}
	const claimed = 64 << 20
	add("blobs/sha256/"+manifest.Layers[0].Digest.Hex, claimed, io.LimitReader(zeros{}, claimed))
	tw.Close()
	var out countWriter
	err := bake("-", "-", Options{Stdin: &archive, Stdout: &out, Format: OCIArchive})
	t.Logf("refused: %v", err)
	if out.n > 1<<20 {
		t.Fatalf("wrote %d bytes", out.n)
	}
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("has %d bytes, its descriptor says %d", claimed, manifest.Layers[0].Size)) {
		t.Fatalf("got %v, want the sizes named", err)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// configArchive is a docker archive of one image with no layers whose
// config holds history entries {"a":1} entries times.
func configArchive(entries int) []byte {
	hist := bytes.Repeat([]byte(`{"a":1},`), entries)
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"history":[` + string(hist[:len(hist)-1]) + `]}`)
	cfgName := hashOf(cfg).Hex + ".json"
	mf, _ := json.Marshal([]map[string]any{{"Config": cfgName, "Layers": []string{}}})
	var buf bytes.Buffer
	writeTar(&buf, map[string][]byte{cfgName: cfg, "manifest.json": mf})
	return buf.Bytes()
}

// TestConfigBoundsMemory: an image's config is held to the same bound on
// JSON values as its manifests and indexes: a 15 MiB config of small
// history entries peaked at 963 MB.
func TestConfigBoundsMemory(t *testing.T) {
	for _, tc := range []struct {
		entries int
		text    string
	}{{15 << 17, "JSON values"}, {maxJSONValues/2 - 10, ""}} {
		in := configArchive(tc.entries)
		msg, rss := bakeInChild(t, filepath.Join(t.TempDir(), "out.tar"), "", func(w io.Writer) { w.Write(in) })
		t.Logf("%d-byte config: peak %d MiB: %s", len(in), rss>>20, msg)
		if rss > 128<<20 {
			t.Fatalf("the bake peaked at %d MiB", rss>>20)
		}
		if !strings.Contains(msg, tc.text) {
			t.Fatalf("got %q, want %q", msg, tc.text)
		}
	}
}

// TestManyTinyEntries: an archive of many empty files with short names is
// refused when their records fill the memory bound, quickly and with the
// bake's memory near that bound (a 2.3 MB .tar.gz of 250,000 empty files
// ran 51 s to 726 MB: each entry cost a 1 MiB read buffer, and its record
// more than was counted).
func TestManyTinyEntries(t *testing.T) {
	start := time.Now()
	msg, rss := bakeInChild(t, filepath.Join(t.TempDir(), "out"), "", func(w io.Writer) {
		zw := gzip.NewWriter(w)
		tw := tar.NewWriter(zw)
		for i := range 250000 {
			if tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: strconv.FormatInt(int64(i), 36), Mode: 0o644}) != nil {
				return // the bake stopped reading
			}
		}
		tw.Close()
		zw.Close()
	})
	t.Logf("%v, peak %d MiB: %s", time.Since(start), rss>>20, msg)
	if rss > 200<<20 {
		t.Fatalf("the bake peaked at %d MiB", rss>>20)
	}
	if !strings.Contains(msg, "more files and names") {
		t.Fatalf("got %q, want a refusal saying the files are too many", msg)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("the bake took %v", d)
	}
}

// TestDiskBounded: what a bake writes to disk is bounded, however far a
// gzip'd input expands, and a layout's sparse file is refused before its
// holes are read (a 4.6 MB docker archive wrote 1 GiB; a 4 GiB sparse
// blob of a layout was streamed in full before its digest was checked).
func TestDiskBounded(t *testing.T) {
	layer := make([]byte, 64<<20)
	legacy := strings.Repeat("ab", 32) + "/layer.tar"
	var in bytes.Buffer
	zw := gzip.NewWriter(&in)
	zw.Write(dockerArchive([]file{{legacy, layer}}, []string{legacy}, layer))
	zw.Close()
	for _, format := range []Format{Docker, OCILayout} {
		dir := t.TempDir()
		out := filepath.Join(dir, "out")
		err := bake("-", out, Options{Stdin: bytes.NewReader(in.Bytes()), Format: format, MaxOutput: 16 << 20})
		if err == nil || !strings.Contains(err.Error(), "past 16 MiB (--max-output)") {
			t.Fatalf("%s: got %v, want a refusal naming the bound", format, err)
		}
		checkNothingLeft(t, dir, out)
	}

	layoutDir, _ := layoutWithIndex(t)
	blob := largestBlob(t, layoutDir)
	if err := os.Truncate(blob, 4<<30); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err := bake(layoutDir, filepath.Join(t.TempDir(), "out"), Options{})
	if err == nil || !strings.Contains(err.Error(), "is a sparse file") {
		t.Fatalf("got %v, want the sparse file refused", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("refused after %v", d)
	}
}

// TestStagingLockedWhileBaking: a bake holds its staging area's lock for
// as long as it runs, so that a bake in another pid namespace, to whom the
// pid means nothing, leaves it alone (TestStaleStagingCleaned holds such a
// lock itself, so it holds only the reading side).
func TestStagingLockedWhileBaking(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(t.TempDir(), "in.tar")
	writeDocker(t, baseImage(t, "amd64", false), in)
	checked := false
	err := bake(in, filepath.Join(dir, "out.tar"), Options{Agent: func(arch string) (string, error) {
		areas, _ := filepath.Glob(filepath.Join(dir, fmt.Sprintf("%s%d-*", stagingPrefix, os.Getpid())))
		if len(areas) != 1 {
			t.Fatalf("staging areas %v", areas)
		}
		f, err := os.Open(areas[0])
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != syscall.EWOULDBLOCK {
			t.Errorf("locking %s while its bake runs: %v, want EWOULDBLOCK", areas[0], err)
		}
		checked = true
		return agents[arch], nil
	}})
	if err != nil || !checked {
		t.Fatalf("%v, checked %v", err, checked)
	}
}
