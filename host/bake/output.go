package bake

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// output is where the baked image goes: a tar (docker save or OCI archive)
// or an OCI layout directory, staged beside its destination and renamed
// into place only when the whole image is written, or a tar on stdout.
type output struct {
	// format is "" for a tar until the input shows whether it is a docker
	// tarball or an OCI archive; guessed says it was set from an input
	// file's name before that.
	format  Format
	guessed bool
	sink    sink
	dest    string // "" for stdout
	force   bool   // an existing dest may be replaced
	disk    *diskBudget
	stage   *staging // beside dest, or in TMPDIR for spool files; removed when the bake ends
	file    *os.File
}

// sink takes the output's files one at a time.
type sink interface {
	// create starts the file name of exactly size bytes.
	create(name string, size int64) (io.WriteCloser, error)
	// has reports whether name was written.
	has(name string) bool
	close() error
}

// checkOutput refuses an output that cannot be written, before anything is
// read: a missing directory, a directory where a file goes or the other
// way round, an existing image without force.
func checkOutput(out string, format Format, inDir, force bool) error {
	isDir := format == OCILayout || (format == "" && inDir)
	if out == "-" {
		if isDir {
			return errors.New("an OCI layout is a directory and cannot go to stdout; use --format oci-archive or docker")
		}
		return nil
	}
	parent := filepath.Dir(out)
	if st, err := os.Stat(parent); err != nil || !st.IsDir() {
		return fmt.Errorf("output directory %s does not exist", parent)
	}
	st, err := os.Stat(out)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case st.IsDir() && !isDir:
		return fmt.Errorf("%s is a directory; a docker or oci-archive image is a file: name one", out)
	case !st.IsDir() && isDir:
		return fmt.Errorf("%s is a file; an OCI layout is a directory", out)
	case !force:
		return fmt.Errorf("%s exists; give --force to replace it", out)
	}
	return checkReplaceable(out, st.IsDir())
}

// checkReplaceable refuses, even with force, to replace what bake would not
// have written: a directory that is not an OCI layout, a file that is not
// a tar. A mistyped output must not cost a source tree.
func checkReplaceable(out string, isDir bool) error {
	if isDir {
		if st, err := os.Lstat(filepath.Join(out, "oci-layout")); err == nil && st.Mode().IsRegular() {
			return nil
		}
		ents, _ := os.ReadDir(out)
		var names []string
		for i, e := range ents {
			if i == 3 {
				names = append(names, "...")
				break
			}
			names = append(names, e.Name())
		}
		return fmt.Errorf("%s is in the way: a directory that is not an OCI layout (it holds %d entries: %s); --force replaces only an image: move it or name another output",
			out, len(ents), strings.Join(names, ", "))
	}
	f, err := os.Open(out)
	if err != nil {
		return err
	}
	defer f.Close()
	h, err := tar.NewReader(f).Next()
	if err != nil {
		return fmt.Errorf("%s is in the way: a file that is not a tar archive; --force replaces only an image: move it or name another output", out)
	}
	if !imageEntryName(h.Name) {
		return fmt.Errorf("%s is in the way: a tar archive that is not an image (its first entry is %s); --force replaces only an image: move it or name another output", out, shortName(h.Name))
	}
	return nil
}

// imageEntryName reports whether an archive whose first entry is name can
// be an image archive, as docker, podman, skopeo, go-containerregistry or
// cork bake write them.
func imageEntryName(name string) bool {
	name = cleanName(name)
	first, _, _ := strings.Cut(name, "/")
	switch {
	case first == "blobs", isSHA256Hex(first):
		return true
	case name == "manifest.json", name == "index.json", name == "oci-layout", name == "repositories":
		return true
	case strings.HasPrefix(name, "sha256:") && isSHA256Hex(name[len("sha256:"):]): // go-containerregistry's config
		return true
	}
	hex, _, _ := strings.Cut(name, ".")
	return isSHA256Hex(hex) && (strings.HasSuffix(name, ".json") || strings.HasSuffix(name, ".tar") || strings.HasSuffix(name, ".tar.gz"))
}

// newOutput opens the staging area for out ("-": w).
func newOutput(out string, format Format, inDir, force bool, maxDisk int64, w io.Writer) (*output, error) {
	if format == "" && inDir {
		format = OCILayout
	}
	o := &output{format: format, force: force}
	if out == "-" {
		cleanStale(os.TempDir())
		o.disk = newDiskBudget(maxDisk, os.TempDir()) // for spool files
		o.sink = newTarSink(w, nil)
		return o, nil
	}
	o.disk = newDiskBudget(maxDisk, filepath.Dir(out))
	o.dest = out
	cleanStale(os.TempDir()) // where spool files of a bake to stdout go
	stage, err := newStaging(filepath.Dir(out))
	if err != nil {
		return nil, err
	}
	o.stage = stage
	if format == OCILayout {
		o.sink = &dirSink{root: filepath.Join(stage.dir, "layout"), names: map[string]bool{}, disk: o.disk}
		return o, nil
	}
	f, err := os.Create(filepath.Join(stage.dir, "image.tar"))
	if err != nil {
		stage.remove()
		return nil, err
	}
	o.file = f
	o.sink = newTarSink(f, o.disk)
	return o, nil
}

// spoolDir returns a directory for spool files: in the staging area, or
// in TMPDIR for stdout.
func (o *output) spoolDir() (string, error) {
	if o.stage == nil {
		stage, err := newStaging(os.TempDir())
		if err != nil {
			return "", err
		}
		o.stage = stage
	}
	dir := filepath.Join(o.stage.dir, "spool")
	return dir, os.MkdirAll(dir, 0o700)
}

// streamName is the name under which an input file goes straight into the
// output, when it can before the image's metadata is read. A blob of an
// OCI layout, and a layer named by its digest (podman's and skopeo's docker
// archives), go in as blobs/sha256/HEX in either format, and the digest is
// checked when the metadata is read; a file named as a docker layer keeps
// its name in a docker tarball, whose manifest.json names its files; any
// other file is spooled.
func (o *output) streamName(name string) (string, bool) {
	if _, ok := blobHex(name); ok {
		return name, true
	}
	if hex, ext, ok := digestFileName(name); ok && ext == "tar" {
		return "blobs/sha256/" + hex, true
	}
	switch name {
	case "manifest.json", "index.json", "oci-layout", "repositories":
		return "", false
	}
	if o.format == "" && isLegacyLayerName(name) {
		// Only docker save writes ID/layer.tar: the input, and so an
		// output in the input's format, is a docker tarball.
		o.format, o.guessed = Docker, true
	}
	// Only a file named as docker save (ID/layer.tar) or
	// go-containerregistry (HEX.tar.gz) name layers goes in as read: any
	// other is spooled, and goes in only if the image names it.
	if o.format == Docker && (isLegacyLayerName(name) || isGzipLayerName(name)) {
		return name, true
	}
	return "", false
}

// isGzipLayerName reports whether name is HEX.tar.gz, as
// go-containerregistry's tarballs name layers.
func isGzipLayerName(name string) bool {
	hex, ok := strings.CutSuffix(name, ".tar.gz")
	return ok && isSHA256Hex(hex)
}

// isLegacyLayerName reports whether name is ID/layer.tar, as docker save
// names layers.
func isLegacyLayerName(name string) bool {
	id, ok := strings.CutSuffix(name, "/layer.tar")
	return ok && isSHA256Hex(id)
}

// settle fixes the output's format once the input's is known: the input's
// when none was asked for.
func (o *output) settle(in Format) error {
	if o.format == "" {
		o.format = in
	}
	if o.guessed && in != Docker {
		return fmt.Errorf("the input holds docker save layers (ID/layer.tar) but is not a docker save tarball")
	}
	return nil
}

// commit finishes the output and moves it into place, unless ctx is
// cancelled first.
func (o *output) commit(ctx context.Context) error {
	if err := o.sink.close(); err != nil {
		return err
	}
	if o.dest == "" {
		return nil
	}
	staged := ""
	if o.file != nil {
		if err := o.file.Close(); err != nil {
			return err
		}
		staged = o.file.Name()
	} else {
		staged = o.sink.(*dirSink).root
	}
	// A signal's handler takes the same lock to remove staging areas: it
	// sees the output either not renamed or renamed, never halfway.
	inProgress.Lock()
	defer inProgress.Unlock()
	if testHookCommit != nil {
		testHookCommit()
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if inProgress.abandoned {
		return errors.New("abandoned")
	}
	if err := o.place(staged); err != nil {
		return err
	}
	inProgress.committed = true
	return nil
}

// testHookCommit, when set, runs as a commit holds its lock, before its
// last check of the context.
var testHookCommit func()

// place renames staged to the output's destination. What appeared there
// while the bake ran is replaced only with force, and only if it is what
// bake would replace at the start: the check and the rename are one step
// with the kernel's help, so nothing is renamed away or overwritten
// unchecked.
func (o *output) place(staged string) error {
	err := renameNoReplace(staged, o.dest)
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTSUP) {
		return o.placeUnchecked(staged) // a filesystem without the flags (NFS)
	}
	if !errors.Is(err, fs.ErrExist) {
		return err
	}
	if !o.force {
		return fmt.Errorf("%s appeared while the image was baked; give --force to replace it", o.dest)
	}
	st, err := os.Lstat(o.dest)
	if err != nil {
		return err
	}
	if isDir := o.format == OCILayout; st.IsDir() != isDir {
		return fmt.Errorf("%s appeared while the image was baked, and is not what the output is (a directory for an OCI layout, a file otherwise)", o.dest)
	}
	if err := checkReplaceable(o.dest, st.IsDir()); err != nil {
		return err
	}
	// The old output goes where the new one was staged, and is removed
	// with the staging area.
	return renameExchange(staged, o.dest)
}

// placeUnchecked renames staged to the destination where the kernel
// cannot check and rename in one step: what is there was checked at the
// start, and is checked again just before.
func (o *output) placeUnchecked(staged string) error {
	if st, err := os.Lstat(o.dest); err == nil {
		if !o.force {
			return fmt.Errorf("%s appeared while the image was baked; give --force to replace it", o.dest)
		}
		if err := checkReplaceable(o.dest, st.IsDir()); err != nil {
			return err
		}
		if err := os.Rename(o.dest, filepath.Join(o.stage.dir, "replaced")); err != nil {
			return err
		}
	}
	return os.Rename(staged, o.dest)
}

// reopen reads back a file of size bytes already in the output.
func (o *output) reopen(name string, size int64) (io.ReadCloser, error) {
	switch s := o.sink.(type) {
	case *dirSink:
		return os.Open(filepath.Join(s.root, filepath.FromSlash(name)))
	case *tarSink:
		if off, ok := s.offsets[name]; ok && o.file != nil {
			return io.NopCloser(io.NewSectionReader(o.file, off, size)), nil
		}
	}
	return nil, fmt.Errorf("%s went to stdout as it was read", name)
}

// cleanup removes whatever the bake left in its staging area.
func (o *output) cleanup() {
	if o.file != nil {
		o.file.Close()
	}
	if o.stage != nil {
		o.stage.remove()
	}
}

// tarSink writes a tar, with the directories of its files before them as
// OCI archives have them, every entry root's and undated, so the same
// image makes the same archive.
type tarSink struct {
	tw      *tar.Writer
	names   map[string]bool
	written *countingWriter
	offsets map[string]int64 // where each file's bytes start
	disk    *diskBudget      // nil on stdout
}

func newTarSink(w io.Writer, disk *diskBudget) *tarSink {
	cw := &countingWriter{w: w}
	return &tarSink{tw: tar.NewWriter(cw), names: map[string]bool{}, written: cw, offsets: map[string]int64{}, disk: disk}
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func (s *tarSink) has(name string) bool { return s.names[name] }

func (s *tarSink) create(name string, size int64) (io.WriteCloser, error) {
	if err := s.disk.take(size, name); err != nil {
		return nil, err
	}
	for _, dir := range parents(name) {
		if s.names[dir+"/"] {
			continue
		}
		s.names[dir+"/"] = true
		if err := s.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
	}
	s.names[name] = true
	if err := s.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o644, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}); err != nil {
		return nil, err
	}
	s.offsets[name] = s.written.n
	return &sized{w: s.tw, name: name, want: size}, nil
}

func (s *tarSink) close() error { return s.tw.Close() }

// parents lists the directories above name, outermost first.
func parents(name string) []string {
	var dirs []string
	for d := path.Dir(name); d != "." && d != "/"; d = path.Dir(d) {
		dirs = append([]string{d}, dirs...)
	}
	return dirs
}

// sized checks that a file gets the size its header promised.
type sized struct {
	w    io.Writer
	f    *os.File
	name string
	want int64
	n    int64
}

func (s *sized) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	s.n += int64(n)
	return n, err
}

func (s *sized) Close() error {
	var err error
	if s.f != nil {
		err = s.f.Close()
	}
	if s.n != s.want {
		return fmt.Errorf("%s: wrote %d of %d bytes", s.name, s.n, s.want)
	}
	return err
}

// dirSink writes an OCI layout directory. Files and directories get the
// modes the umask allows, as other image tools write them, so that
// another user can read the layout.
type dirSink struct {
	root  string
	names map[string]bool
	disk  *diskBudget
}

func (s *dirSink) has(name string) bool { return s.names[name] }

func (s *dirSink) create(name string, size int64) (io.WriteCloser, error) {
	if err := s.disk.take(size, name); err != nil {
		return nil, err
	}
	p := filepath.Join(s.root, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o777); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o666)
	if err != nil {
		return nil, err
	}
	s.names[name] = true
	return &sized{w: f, f: f, name: name, want: size}, nil
}

func (s *dirSink) close() error { return nil }

// put writes a whole file held in memory.
func put(s sink, name string, data []byte) error {
	w, err := s.create(name, int64(len(data)))
	if err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}
