package client

import (
	"archive/tar"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/copytree"
)

// A tar stream stands for the host's side of a copy (cork cp - :DEST and
// cork cp :SRC -), as docker cp's - does. The guest never sees tar: the
// host turns it into a copy's trees and back.

// SendTar sends the tar stream r as one tree whose contents go into the
// destination. Entries that would land outside it are refused here, before
// the guest refuses them too; directories a stream leaves out before what
// they hold are made, as tar makes them.
func SendTar(s *copytree.Sender, r io.Reader) error {
	t := &tarSender{s: s, now: time.Now(), made: map[string]bool{}, files: map[string]bool{}}
	if err := s.Put(&protocol.Entry{Kind: protocol.EntryDir, Contents: true, Mode: 0o755, ModTime: t.now}, true, nil, nil); err != nil {
		return err
	}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading the tar stream: %w", err)
		}
		if err := t.entry(hdr, tr); err != nil {
			return err
		}
	}
}

// tarSender is what SendTar knows of the stream so far.
type tarSender struct {
	s   *copytree.Sender
	now time.Time
	// made is true for a directory, false for a file or link, which
	// nothing may be written through.
	made map[string]bool
	// files holds the names that are files now (a file's or a hard
	// link's): a hard link names one of them, as tar -x links to what has
	// the name at that point, not to the file it first named.
	files map[string]bool
}

// entry sends the entry hdr stands for, with its data from data, or tells
// the Sender why not. The error is the connection's.
func (t *tarSender) entry(hdr *tar.Header, data io.Reader) error {
	shown := []byte(hdr.Name)
	name := streamName(hdr.Name)
	if name == "" || name == "." {
		return nil // the destination itself
	}
	if err := protocol.CheckRelative([]byte(name)); err != nil {
		t.s.Fail(shown, "refused: it would be written outside the destination")
		return nil
	}
	if ok, err := t.parents(name, shown); !ok || err != nil {
		return err
	}
	e, ok := t.convert(hdr, name, shown)
	if !ok {
		return nil
	}
	return t.s.Put(e, false, data, shown)
}

// parents sends the parents of name that the stream has not given yet,
// from the top down, as tar makes them; it refuses a name beneath one
// that is not a directory.
func (t *tarSender) parents(name string, shown []byte) (bool, error) {
	var missing []string
	for d := path.Dir(name); d != "."; d = path.Dir(d) {
		isDir, seen := t.made[d]
		if seen && !isDir {
			t.s.Fail(shown, fmt.Sprintf("refused: %q in this stream is not a directory, and cork cp writes through no link", d))
			return false, nil
		}
		if !seen {
			missing = append(missing, d)
		}
	}
	for i := len(missing) - 1; i >= 0; i-- {
		t.made[missing[i]] = true
		if err := t.s.Put(&protocol.Entry{Kind: protocol.EntryDir, Mode: 0o755, ModTime: t.now, Path: []byte(missing[i])}, false, nil, nil); err != nil {
			return false, err
		}
	}
	return true, nil
}

// convert makes the entry hdr stands for, or tells the Sender why there
// is none.
func (t *tarSender) convert(hdr *tar.Header, name string, shown []byte) (*protocol.Entry, bool) {
	e := &protocol.Entry{
		Mode: protocol.FileMode(uint32(hdr.Mode) & 0o7777), UID: uint32(hdr.Uid), GID: uint32(hdr.Gid),
		ModTime: hdr.ModTime, Path: []byte(name),
	}
	switch hdr.Typeflag {
	case tar.TypeReg:
		e.Kind, e.Size = protocol.EntryFile, hdr.Size
		t.made[name], t.files[name] = false, true
	case tar.TypeDir:
		e.Kind = protocol.EntryDir
		t.made[name] = true
		delete(t.files, name)
	case tar.TypeSymlink:
		e.Kind, e.Link = protocol.EntrySymlink, []byte(hdr.Linkname)
		t.made[name] = false
		delete(t.files, name)
	case tar.TypeLink:
		target := streamName(hdr.Linkname)
		if why := hardlinkRefused(t.s, t.files[target]); why != "" {
			t.s.Fail(shown, fmt.Sprintf("not copied: a hard link to %q, %s", hdr.Linkname, why))
			return nil, false
		}
		e.Kind, e.Link = protocol.EntryHardlink, []byte(target)
		t.made[name], t.files[name] = false, true
	case tar.TypeChar:
		t.s.Skip(shown, "a character device")
		return nil, false
	case tar.TypeBlock:
		t.s.Skip(shown, "a block device")
		return nil, false
	case tar.TypeFifo:
		t.s.Skip(shown, "a FIFO")
		return nil, false
	default:
		t.s.Skip(shown, fmt.Sprintf("tar entry type %q", hdr.Typeflag))
		return nil, false
	}
	return e, true
}

// streamName is a tar stream's name as a path beneath the destination,
// without leading "./" and trailing slashes.
func streamName(n string) string {
	n = strings.TrimRight(n, "/")
	for strings.HasPrefix(n, "./") {
		n = strings.TrimPrefix(n, "./")
	}
	return n
}

// hardlinkRefused says why a hard link in a stream is not sent, or "".
func hardlinkRefused(s *copytree.Sender, toAFile bool) string {
	switch {
	case !s.Hardlinks:
		return "which this corkd cannot make (update the corkd in the image: cork bake)"
	case !toAFile:
		return "which is not a file earlier in this stream"
	}
	return ""
}

// TarSink is a copytree.Sink that writes the trees it takes to a tar
// stream, each under its root's name (its contents at the top, for a root
// that gives its contents).
type TarSink struct {
	tw     *tar.Writer
	prefix string
	root   *protocol.Entry
}

// NewTarSink writes a tar stream to w.
func NewTarSink(w io.Writer) *TarSink { return &TarSink{tw: tar.NewWriter(w)} }

func (t *TarSink) header(e *protocol.Entry, name string) *tar.Header {
	return &tar.Header{
		Name: name, Mode: int64(protocol.UnixMode(e.Mode)), Uid: int(e.UID), Gid: int(e.GID),
		ModTime: e.ModTime, Format: tar.FormatPAX,
	}
}

func (t *TarSink) name(e *protocol.Entry) string {
	if e == t.root {
		return string(e.Path)
	}
	return t.prefix + string(e.Path)
}

// Where names e as it is in the stream.
func (t *TarSink) Where(e *protocol.Entry) []byte {
	if e == nil {
		return []byte("-")
	}
	return []byte(t.name(e))
}

// Root begins a tree.
func (t *TarSink) Root(e *protocol.Entry) (copytree.FileSink, error) {
	t.root, t.prefix = e, ""
	switch e.Kind {
	case protocol.EntryDir:
		if e.Contents {
			return nil, nil
		}
		t.prefix = string(e.Path) + "/"
		return nil, t.Dir(e)
	case protocol.EntrySymlink:
		return nil, t.Symlink(e)
	}
	return t.File(e)
}

// Dir writes a directory's header.
func (t *TarSink) Dir(e *protocol.Entry) error {
	h := t.header(e, strings.TrimSuffix(t.name(e), "/")+"/")
	h.Typeflag = tar.TypeDir
	return t.tw.WriteHeader(h)
}

// Symlink writes a link's header.
func (t *TarSink) Symlink(e *protocol.Entry) error {
	h := t.header(e, t.name(e))
	h.Typeflag, h.Linkname = tar.TypeSymlink, string(e.Link)
	return t.tw.WriteHeader(h)
}

// Hardlink writes a hard link's header, naming the file in the stream.
func (t *TarSink) Hardlink(e *protocol.Entry, _ copytree.FileID) error {
	h := t.header(e, t.name(e))
	h.Typeflag, h.Linkname = tar.TypeLink, t.prefix+string(e.Link)
	return t.tw.WriteHeader(h)
}

// File writes a file's header; its bytes follow.
func (t *TarSink) File(e *protocol.Entry) (copytree.FileSink, error) {
	h := t.header(e, t.name(e))
	h.Typeflag, h.Size = tar.TypeReg, e.Size
	if err := t.tw.WriteHeader(h); err != nil {
		return nil, err
	}
	return &tarFile{tw: t.tw, left: e.Size}, nil
}

// Finish ends the stream.
func (t *TarSink) Finish() error { return t.tw.Close() }

// Abort leaves the stream without its end, so that whoever reads it sees
// that it was cut short.
func (t *TarSink) Abort() {}

// tarFile is a file's bytes in a tar stream. A stream cannot take back a
// header: a file the sender could not send whole is padded with zeros, as
// GNU tar pads a file that shrank, and named as a problem.
type tarFile struct {
	tw   *tar.Writer
	left int64
}

func (f *tarFile) Write(p []byte) (int, error) {
	n, err := f.tw.Write(p)
	f.left -= int64(n)
	return n, err
}

func (f *tarFile) Commit() error { return nil }

func (f *tarFile) Abort() {
	zeros := make([]byte, 32<<10)
	for f.left > 0 {
		n, err := f.tw.Write(zeros[:min(int64(len(zeros)), f.left)])
		f.left -= int64(n)
		if err != nil {
			return
		}
	}
}
