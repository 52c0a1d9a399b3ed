// Package copytree is the two ends of a copy (protocol.CopyIn and
// CopyOut): Sender walks files into frames, Receive writes frames beneath a
// destination and never outside it. cork and corkd both use it, each as
// sender one way and receiver the other.
package copytree

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/corkvm/cork/protocol"
)

// Sender sends trees of files over W.
type Sender struct {
	W *protocol.Writer
	// Follow sends what a source that is a symbolic link points to; links
	// beneath a source are always sent as links.
	Follow bool
	// Hardlinks sends a file met again under another name in the same
	// tree as a hard link to the first (protocol.EntryHardlink): only to a
	// receiver that takes them.
	Hardlinks bool
	// Chunk is the most file data per frame; 0 means 64 KiB, what every
	// agent accepts.
	Chunk int
	// Problem is told about each thing not sent: what, why, and whether it
	// was skipped by design (a device, a FIFO, a socket) or failed.
	Problem func(path []byte, message string, skipped bool)
	// Progress, when set, is called after each entry and each chunk with
	// the totals so far.
	Progress func(files int, bytes int64)

	Files    int   // files and links sent (directories are not counted)
	Bytes    int64 // file bytes sent
	Problems int   // failures told to Problem
	buf      []byte
	linked   linkedFiles // the tree's files with other names, sent so far
}

// linkedFiles maps the files of a tree that have more than one name to
// the path each was first sent under, bounded: past the bounds a file is
// sent again under each name, as a file.
type linkedFiles struct {
	paths map[FileID][]byte
	bytes int
}

// FileID is a file's identity on its machine: its device and inode.
type FileID struct{ Dev, Ino uint64 }

const (
	maxLinkedFiles = 1 << 16
	maxLinkedBytes = 4 << 20
)

// linkID is fi's identity when it has other names.
func linkID(fi fs.FileInfo) (FileID, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || uint64(st.Nlink) < 2 {
		return FileID{}, false
	}
	return FileID{Dev: uint64(st.Dev), Ino: uint64(st.Ino)}, true
}

// sentAs returns the path fi was sent under before, if it was.
func (l *linkedFiles) sentAs(fi fs.FileInfo) []byte {
	id, ok := linkID(fi)
	if !ok {
		return nil
	}
	return l.paths[id]
}

// remember notes that fi, if it has other names, is sent under rel.
func (l *linkedFiles) remember(fi fs.FileInfo, rel []byte) {
	id, ok := linkID(fi)
	if !ok || len(l.paths) >= maxLinkedFiles || l.bytes+len(rel) > maxLinkedBytes {
		return
	}
	if l.paths == nil {
		l.paths = map[FileID][]byte{}
	}
	l.paths[id] = rel
	l.bytes += len(rel)
}

// SourceName splits a source path as the user wrote it into the path to
// read and the root's name: the base name, or the contents of the
// directory when it ends in "/." (as docker cp takes it).
func SourceName(src string) (clean, name string, contents bool) {
	if src == "." || strings.HasSuffix(src, "/.") {
		contents = true
	}
	clean = path.Clean(src)
	name = path.Base(clean)
	if name == "/" || name == "." || name == ".." {
		name, contents = "", true
	}
	return clean, name, contents
}

// Send sends the tree at src: a missing or unreadable source is told to
// Problem and sends nothing. The error is the connection's.
func (s *Sender) Send(src string) error {
	clean, name, contents := SourceName(src)
	stat := os.Lstat
	if s.Follow {
		stat = os.Stat
	}
	if strings.HasSuffix(src, "/") || strings.HasSuffix(src, "/.") {
		// A source written as a directory is one, as path resolution
		// makes it: a link to a directory is followed ("ld/" and "ld/."
		// are the directory), and a file is "not a directory".
		stat = func(p string) (fs.FileInfo, error) { return os.Stat(p + "/") }
	}
	fi, err := stat(clean)
	if err != nil {
		s.fail([]byte(src), describe(err))
		return nil
	}
	e, ok := s.entryOf(fi, []byte(src), []byte(name))
	if !ok {
		return nil
	}
	if e.Kind != protocol.EntryDir {
		contents = false
	}
	e.Contents = contents
	s.linked = linkedFiles{}
	if e.Kind == protocol.EntrySymlink {
		if e.Link, err = readlink(clean); err != nil {
			s.fail([]byte(src), describe(err))
			return nil
		}
	}
	switch e.Kind {
	case protocol.EntryFile:
		f, err := openFile(clean, s.Follow)
		if err != nil {
			s.fail([]byte(src), describe(err))
			return nil
		}
		defer f.Close()
		return s.sendFile(protocol.TypeCopyRoot, e, f, []byte(src))
	case protocol.EntryDir:
		if err := s.write(protocol.TypeCopyRoot, e); err != nil {
			return err
		}
		return s.sendDir(clean, nil, []byte(src))
	default:
		return s.write(protocol.TypeCopyRoot, e)
	}
}

// sendDir sends what the directory at dir holds, its paths beneath the
// root starting with rel.
func (s *Sender) sendDir(dir string, rel []byte, shown []byte) error {
	f, err := os.Open(dir)
	if err != nil {
		s.fail(shown, describe(err))
		return nil
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		s.fail(shown, describe(err))
		return nil
	}
	slices.Sort(names) // the same tree sends the same stream
	for _, name := range names {
		p := path.Join(dir, name)
		childRel := join(rel, name)
		childShown := join(shown, name)
		fi, err := os.Lstat(p)
		if err != nil {
			s.fail(childShown, describe(err))
			continue
		}
		e, ok := s.entryOf(fi, childShown, childRel)
		if !ok {
			continue
		}
		if err := s.sendEntry(p, fi, e, childShown); err != nil {
			return err
		}
	}
	return nil
}

// sendEntry sends e, what the directory being sent holds at p (fi), and
// for a directory all beneath it. The error is the connection's.
func (s *Sender) sendEntry(p string, fi fs.FileInfo, e *protocol.Entry, shown []byte) error {
	var err error
	switch e.Kind {
	case protocol.EntryDir:
		if err := s.write(protocol.TypeCopyEntry, e); err != nil {
			return err
		}
		return s.sendDir(p, e.Path, shown)
	case protocol.EntrySymlink:
		if e.Link, err = readlink(p); err != nil {
			s.fail(shown, describe(err))
			return nil
		}
		return s.write(protocol.TypeCopyEntry, e)
	}
	if first := s.linked.sentAs(fi); first != nil {
		e.Kind, e.Size, e.Link = protocol.EntryHardlink, 0, first
		return s.write(protocol.TypeCopyEntry, e)
	}
	f, err := openFile(p, false)
	if err != nil {
		s.fail(shown, describe(err))
		return nil
	}
	defer f.Close()
	if s.Hardlinks {
		s.linked.remember(fi, e.Path)
	}
	return s.sendFile(protocol.TypeCopyEntry, e, f, shown)
}

// entryOf describes fi as an entry at rel, or tells Problem why it is not
// sent.
func (s *Sender) entryOf(fi fs.FileInfo, shown, rel []byte) (*protocol.Entry, bool) {
	e := &protocol.Entry{Mode: fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky), ModTime: fi.ModTime(), Path: rel}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		e.UID, e.GID = st.Uid, st.Gid
	}
	switch t := fi.Mode().Type(); {
	case t == 0:
		e.Kind, e.Size = protocol.EntryFile, fi.Size()
	case t == fs.ModeDir:
		e.Kind = protocol.EntryDir
	case t == fs.ModeSymlink:
		e.Kind = protocol.EntrySymlink
	default:
		s.skip(shown, kindName(t))
		return nil, false
	}
	return e, true
}

func kindName(t fs.FileMode) string {
	switch {
	case t&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case t&fs.ModeSocket != 0:
		return "a socket"
	case t&fs.ModeCharDevice != 0:
		return "a character device"
	case t&fs.ModeDevice != 0:
		return "a block device"
	}
	return "not a file, directory or link"
}

// sendFile sends e, then exactly e.Size bytes of f and CopyEnd: a file
// that shrinks meanwhile ends with an error the receiver drops it for; one
// that grows is sent as it was when it was listed.
func (s *Sender) sendFile(t protocol.Type, e *protocol.Entry, f io.Reader, shown []byte) error {
	if err := s.write(t, e); err != nil {
		return err
	}
	chunk := s.Chunk
	if chunk <= 0 {
		chunk = 64 << 10
	}
	if len(s.buf) < protocol.HeaderSize+chunk {
		s.buf = protocol.NewDataFrame(chunk)
	}
	var end protocol.CopyEnd
	for left := e.Size; left > 0; {
		n, err := f.Read(s.buf[protocol.HeaderSize : protocol.HeaderSize+int(min(int64(chunk), left))])
		if n > 0 {
			protocol.PutHeader(s.buf, protocol.TypeCopyData, n)
			if err := s.W.WriteFramed(s.buf[:protocol.HeaderSize+n]); err != nil {
				return err
			}
			left -= int64(n)
			s.Bytes += int64(n)
			s.progress()
		}
		if err == io.EOF && left > 0 {
			end.Error = fmt.Sprintf("it shrank while being copied (%d bytes short)", left)
			break
		}
		if err != nil && err != io.EOF {
			end.Error = describe(err)
			break
		}
	}
	if end.Error != "" {
		s.fail(shown, "not copied: "+end.Error)
	}
	return s.W.WriteJSON(protocol.TypeCopyEnd, &end)
}

// Put sends one entry that does not come from this machine's files (a tar
// stream's): the root of a tree when root is set, and, for a file, e.Size
// bytes read from data. shown names it in problems.
func (s *Sender) Put(e *protocol.Entry, root bool, data io.Reader, shown []byte) error {
	t := protocol.TypeCopyEntry
	if root {
		t = protocol.TypeCopyRoot
	}
	if e.Kind == protocol.EntryFile {
		return s.sendFile(t, e, data, shown)
	}
	return s.write(t, e)
}

// Skip tells Problem that shown is left out by design, and why.
func (s *Sender) Skip(shown []byte, why string) { s.skip(shown, why) }

// Fail tells Problem that shown could not be copied, and why.
func (s *Sender) Fail(shown []byte, why string) { s.fail(shown, why) }

func (s *Sender) write(t protocol.Type, e *protocol.Entry) error {
	b, err := protocol.EncodeEntry(e)
	if err != nil {
		return err
	}
	if err := s.W.WriteFrame(t, b); err != nil {
		return err
	}
	if e.Kind != protocol.EntryDir {
		s.Files++
	}
	s.progress()
	return nil
}

func (s *Sender) progress() { tellProgress(s.Progress, s.Files, s.Bytes) }

func (s *Sender) fail(shown []byte, msg string) {
	tellProblem(s.Problem, &s.Problems, shown, msg, false)
}

func (s *Sender) skip(shown []byte, what string) {
	tellProblem(s.Problem, &s.Problems, shown, "skipped: "+what+" (cork cp copies files, directories and symbolic links)", true)
}

// openFile opens a regular file for reading without following a link in
// its last element (unless follow), and checks that it is still a regular
// file: what was listed may have been replaced.
func openFile(p string, follow bool) (*os.File, error) {
	flags := os.O_RDONLY | unix.O_NONBLOCK // a FIFO put in its place must not block the open
	if !follow {
		flags |= unix.O_NOFOLLOW
	}
	f, err := os.OpenFile(p, flags, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = errors.New("it is no longer a regular file")
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func readlink(p string) ([]byte, error) {
	l, err := os.Readlink(p)
	return []byte(l), err
}

func join(dir []byte, name string) []byte {
	if len(dir) == 0 {
		return []byte(name)
	}
	out := make([]byte, 0, len(dir)+1+len(name))
	out = append(out, dir...)
	if dir[len(dir)-1] != '/' {
		out = append(out, '/')
	}
	return append(out, name...)
}

// describe is err without the operation and path that os wraps it in: the
// path is named beside it.
func describe(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		err = le.Err
	}
	return err.Error()
}
