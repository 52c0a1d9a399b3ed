package protocol

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"time"
)

// Copying files (capability CapCopy, version 2): instead of Exec, the host
// sends CopyIn or CopyOut; see the package documentation for the exchange.

// CapCopy announces CopyIn and CopyOut.
const CapCopy = "copy"

// CapCopyHardlinks announces that the guest takes EntryHardlink entries in
// a CopyIn, and sends them in a CopyOut that asks for them.
const CapCopyHardlinks = "copy-hardlinks"

// KindCopy is an Error ending a copy: the destination cannot take the
// sources, or a source is not there.
const KindCopy = "copy"

// CopyIn asks the guest to write the trees the host sends beneath Dest, as
// User. Paths are bytes: a file name need not be UTF-8.
type CopyIn struct {
	Dest    []byte `json:"dest"`    // the guest path, as the user wrote it (a trailing slash says "a directory")
	Sources int    `json:"sources"` // how many trees follow; more than one needs Dest to be a directory
	User    string `json:"user,omitempty"`
	// KeepOwners writes the owners the entries carry instead of making
	// User the owner (cork cp -a).
	KeepOwners bool `json:"keep_owners,omitempty"`
}

// CopyOut asks the guest to send the trees at Paths, read as User.
type CopyOut struct {
	Paths [][]byte `json:"paths"`
	User  string   `json:"user,omitempty"`
	// Follow sends what a path that is a symbolic link points to instead
	// of the link (cork cp -L); links beneath it are sent as links.
	Follow bool `json:"follow,omitempty"`
	// Hardlinks asks for EntryHardlink entries (CapCopyHardlinks): a file
	// met again under another name in the same tree is sent as a link to
	// the first.
	Hardlinks bool `json:"hardlinks,omitempty"`
}

// MaxCopySources bounds CopyIn.Sources and CopyOut.Paths.
const MaxCopySources = 4096

// Validate reports what is wrong with a CopyIn.
func (c *CopyIn) Validate() error {
	switch {
	case len(c.Dest) == 0:
		return errors.New("copy: no destination")
	case bytes.IndexByte(c.Dest, 0) >= 0:
		return errors.New("copy: the destination holds a NUL byte")
	case c.Sources < 1 || c.Sources > MaxCopySources:
		return fmt.Errorf("copy: %d sources; 1 to %d are allowed", c.Sources, MaxCopySources)
	}
	return nil
}

// Validate reports what is wrong with a CopyOut.
func (c *CopyOut) Validate() error {
	if len(c.Paths) < 1 || len(c.Paths) > MaxCopySources {
		return fmt.Errorf("copy: %d paths; 1 to %d are allowed", len(c.Paths), MaxCopySources)
	}
	for _, p := range c.Paths {
		if len(p) == 0 || bytes.IndexByte(p, 0) >= 0 {
			return fmt.Errorf("copy: path %q is empty or holds a NUL byte", p)
		}
	}
	return nil
}

// EntryKind is what an Entry is.
type EntryKind uint8

const (
	EntryFile    EntryKind = 1
	EntryDir     EntryKind = 2
	EntrySymlink EntryKind = 3
	// EntryHardlink is another name for a file sent earlier in the same
	// tree: Link is that file's path beneath the root (CapCopyHardlinks).
	EntryHardlink EntryKind = 4
)

func (k EntryKind) String() string {
	switch k {
	case EntryFile:
		return "file"
	case EntryDir:
		return "directory"
	case EntrySymlink:
		return "symbolic link"
	case EntryHardlink:
		return "hard link"
	}
	return fmt.Sprintf("kind %d", uint8(k))
}

// Entry is one file, directory or symbolic link of a tree being copied.
// A CopyRoot frame carries a tree's root: Path is the source's base name
// (empty only with Contents), and Contents says that what is inside the
// root goes into the destination rather than the root itself (a source
// ending in "/."). A CopyEntry frame carries a path beneath the root:
// slash-separated, relative, without "." or ".." elements. A file's entry
// is followed by CopyData frames holding exactly Size bytes, then CopyEnd.
type Entry struct {
	Kind     EntryKind
	Contents bool        // CopyRoot only
	Mode     fs.FileMode // permission bits, with ModeSetuid, ModeSetgid and ModeSticky
	UID, GID uint32
	ModTime  time.Time
	Size     int64  // files
	Path     []byte // see above
	Link     []byte // a symbolic link's target, as it is: it is never followed; a hard link's file, beneath the root
}

// MaxPathBytes bounds Entry.Path and Entry.Link.
const MaxPathBytes = 4096

// entryFixed is the size of an Entry's fixed fields on the wire: kind,
// flags, mode, uid, gid, seconds, nanoseconds, size, path length, link
// length.
const entryFixed = 1 + 1 + 4 + 4 + 4 + 8 + 4 + 8 + 2 + 2

const entryContents = 1 // the flags bit for Entry.Contents

// modeBits are the Entry.Mode bits that travel, as the Unix mode bits they
// stand for.
var modeBits = []struct {
	fs   fs.FileMode
	unix uint32
}{{fs.ModeSetuid, 0o4000}, {fs.ModeSetgid, 0o2000}, {fs.ModeSticky, 0o1000}}

// UnixMode returns m as Unix permission bits (07777).
func UnixMode(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	for _, b := range modeBits {
		if m&b.fs != 0 {
			u |= b.unix
		}
	}
	return u
}

// FileMode returns Unix permission bits as an fs.FileMode.
func FileMode(u uint32) fs.FileMode {
	m := fs.FileMode(u & 0o777)
	for _, b := range modeBits {
		if u&b.unix != 0 {
			m |= b.fs
		}
	}
	return m
}

// EncodeEntry encodes e for a CopyRoot or CopyEntry frame.
func EncodeEntry(e *Entry) ([]byte, error) {
	if len(e.Path) > MaxPathBytes || len(e.Link) > MaxPathBytes {
		return nil, fmt.Errorf("copy: %q: a path or link of more than %d bytes", e.Path, MaxPathBytes)
	}
	b := make([]byte, entryFixed, entryFixed+len(e.Path)+len(e.Link))
	b[0] = byte(e.Kind)
	if e.Contents {
		b[1] = entryContents
	}
	binary.BigEndian.PutUint32(b[2:], UnixMode(e.Mode))
	binary.BigEndian.PutUint32(b[6:], e.UID)
	binary.BigEndian.PutUint32(b[10:], e.GID)
	binary.BigEndian.PutUint64(b[14:], uint64(e.ModTime.Unix()))
	binary.BigEndian.PutUint32(b[22:], uint32(e.ModTime.Nanosecond()))
	binary.BigEndian.PutUint64(b[26:], uint64(e.Size))
	binary.BigEndian.PutUint16(b[34:], uint16(len(e.Path)))
	binary.BigEndian.PutUint16(b[36:], uint16(len(e.Link)))
	b = append(b, e.Path...)
	return append(b, e.Link...), nil
}

// DecodeEntry decodes a CopyRoot (root true) or CopyEntry payload and
// checks it: a path that could name anything outside the tree it belongs
// to is refused here, whichever side sent it.
func DecodeEntry(p []byte, root bool) (*Entry, error) {
	if len(p) < entryFixed {
		return nil, fmt.Errorf("copy: an entry of %d bytes, shorter than its %d fixed bytes", len(p), entryFixed)
	}
	if p[1]&^entryContents != 0 {
		return nil, fmt.Errorf("copy: unknown entry flags %#x", p[1])
	}
	e := &Entry{
		Kind:     EntryKind(p[0]),
		Contents: p[1]&entryContents != 0,
		UID:      binary.BigEndian.Uint32(p[6:]),
		GID:      binary.BigEndian.Uint32(p[10:]),
	}
	mode := binary.BigEndian.Uint32(p[2:])
	if mode&^0o7777 != 0 {
		return nil, fmt.Errorf("copy: mode %#o has bits beyond 07777", mode)
	}
	e.Mode = FileMode(mode)
	sec, nsec := int64(binary.BigEndian.Uint64(p[14:])), binary.BigEndian.Uint32(p[22:])
	if nsec >= 1e9 {
		return nil, fmt.Errorf("copy: %d nanoseconds in a modification time", nsec)
	}
	e.ModTime = time.Unix(sec, int64(nsec))
	size := binary.BigEndian.Uint64(p[26:])
	pathLen, linkLen := int(binary.BigEndian.Uint16(p[34:])), int(binary.BigEndian.Uint16(p[36:]))
	if len(p) != entryFixed+pathLen+linkLen {
		return nil, fmt.Errorf("copy: an entry of %d bytes, its fields say %d", len(p), entryFixed+pathLen+linkLen)
	}
	e.Path = p[entryFixed : entryFixed+pathLen : entryFixed+pathLen]
	e.Link = p[entryFixed+pathLen:]
	switch e.Kind {
	case EntryFile:
		if size > 1<<62 {
			return nil, fmt.Errorf("copy: %q: a size of %d bytes", e.Path, size)
		}
		e.Size = int64(size)
	case EntryDir:
	case EntrySymlink:
		if len(e.Link) == 0 || bytes.IndexByte(e.Link, 0) >= 0 {
			return nil, fmt.Errorf("copy: link %q: its target is empty or holds a NUL byte", e.Path)
		}
	case EntryHardlink:
		if root {
			return nil, fmt.Errorf("copy: %q: a hard link cannot be a root", e.Path)
		}
		if err := CheckRelative(e.Link); err != nil {
			return nil, fmt.Errorf("copy: hard link %q: %w", e.Path, err)
		}
	default:
		return nil, fmt.Errorf("copy: %q: unknown entry kind %d", e.Path, p[0])
	}
	if e.Kind != EntryFile && size != 0 {
		return nil, fmt.Errorf("copy: %q: a %s with a size", e.Path, e.Kind)
	}
	if e.Kind != EntrySymlink && e.Kind != EntryHardlink && len(e.Link) != 0 {
		return nil, fmt.Errorf("copy: %q: a %s with a link target", e.Path, e.Kind)
	}
	if root {
		return e, checkRootName(e)
	}
	if e.Contents {
		return nil, fmt.Errorf("copy: %q: only a root takes its contents", e.Path)
	}
	return e, CheckRelative(e.Path)
}

func checkRootName(e *Entry) error {
	switch {
	case len(e.Path) == 0 && !e.Contents:
		return errors.New("copy: a root with no name")
	case e.Contents && e.Kind != EntryDir:
		return fmt.Errorf("copy: %q: the contents of a %s", e.Path, e.Kind)
	case len(e.Path) == 0:
		return nil
	case bytes.IndexByte(e.Path, '/') >= 0, string(e.Path) == ".", string(e.Path) == "..", bytes.IndexByte(e.Path, 0) >= 0:
		return fmt.Errorf("copy: root name %q is not one path element", e.Path)
	}
	return nil
}

// CheckRelative reports what makes p unfit to name something beneath a
// directory: an absolute path, an empty, "." or ".." element, or a NUL.
func CheckRelative(p []byte) error {
	if len(p) == 0 {
		return errors.New("copy: an empty path")
	}
	if p[0] == '/' {
		return fmt.Errorf("copy: %q is absolute", p)
	}
	if bytes.IndexByte(p, 0) >= 0 {
		return fmt.Errorf("copy: %q holds a NUL byte", p)
	}
	for elem := range bytes.SplitSeq(p, []byte("/")) {
		switch string(elem) {
		case "":
			return fmt.Errorf("copy: %q has an empty element", p)
		case ".", "..":
			return fmt.Errorf("copy: %q has a %q element", p, elem)
		}
	}
	return nil
}

// CopyEnd ends a file's CopyData frames. Error, when set, says why the
// sender could not send all of it: the receiver drops what it got.
type CopyEnd struct {
	Error string `json:"error,omitempty"`
}

// CopyProblem names something that was not copied, and why. Skipped marks
// what is left out by design (a device, a FIFO, a socket) rather than
// failed.
type CopyProblem struct {
	Path    []byte `json:"path"`
	Message string `json:"message"`
	Skipped bool   `json:"skipped,omitempty"`
}

// CopyDone ends a side's part of a copy with what it counted: the host's
// after its last tree in a CopyIn, the guest's after its last tree in a
// CopyOut, and the guest's answer to the host's in a CopyIn.
type CopyDone struct {
	Files    int   `json:"files"`    // files and links, not directories (a receiver's: those that landed)
	Bytes    int64 `json:"bytes"`    // file bytes (a receiver's: of the files that landed)
	Problems int   `json:"problems"` // failures, not skips
}
