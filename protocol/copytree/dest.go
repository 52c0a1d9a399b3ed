package copytree

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corkvm/cork/protocol"
)

// Dest is a Sink that writes trees beneath a directory of this machine,
// resolving each tree's root as docker cp does: a file into an existing
// directory under its own name, over an existing file, or to a new name in
// an existing directory; a directory into an existing directory (its
// contents, for a root with Contents) or as a new directory.
//
// Beneath the destination it follows no symbolic link: each directory on
// the way to an entry is opened without following one, so a link the copy
// made, or found there, never takes an entry outside. A file is written
// under a temporary name and renamed into place only when whole.
type Dest struct {
	Path []byte // as the user wrote it: a trailing slash means "a directory"
	// Sources is how many sources the copy has: several go only into an
	// existing directory (CheckSources).
	Sources int
	// KeepOwners (cork cp -a) gives entries the owners they carry, and a
	// directory merged into the source's mode as it is.
	KeepOwners bool

	base    int             // the directory the current tree is written beneath, when open
	shown   []byte          // base as the user names it, for messages
	top     []byte          // the tree's root beneath base; empty: base is the root
	root    *protocol.Entry // the current tree's root
	cacheAt []byte          // the directory cacheFd is, beneath base
	cacheFd int             // the last parent opened, when cached
	cached  bool
	dirs    []madeDir      // directories made or merged into in this tree, their modes and times set last
	dirAt   map[string]int // each of dirs by path: a path met again is one directory
	dirMem  int            // what dirs and dirAt hold, in bytes
	ended   []error        // what went wrong ending the trees before this one
}

// madeDir is a directory this copy made, or merged a source directory
// into: its mode and time are set once what it holds is written, so that
// a read-only one can be filled. A merged one gets the source's time, as
// docker cp gives it, and its mode narrowed by the source's (mergedMode).
type madeDir struct {
	rel     string
	mode    fs.FileMode
	modTime time.Time
	merged  bool
}

// maxMadeDirBytes bounds what the directories remembered for the end
// hold, a fixed cost for each and its path (a sender picks the paths);
// beyond it modes and times are set at once.
const (
	maxMadeDirBytes = 2 << 20
	madeDirCost     = 128 // a madeDir, its place in dirAt, the map's share
)

// maxEndedErrors bounds the problems kept from ending earlier trees.
const maxEndedErrors = 1000

const tmpPrefix = ".cork-cp-"

// closeTree ends the current tree: the directories it made or merged
// into get their modes and times, and what it held open is closed. Each
// directory that failed is a *problemAt.
func (d *Dest) closeTree() error {
	var errs []error
	for i := len(d.dirs) - 1; i >= 0; i-- { // the deepest first: a parent's time is set after its children change it
		if err := d.finishDir(d.dirs[i]); err != nil {
			errs = append(errs, err)
		}
	}
	d.dirs, d.dirAt, d.dirMem = nil, nil, 0
	d.dropCache()
	if d.root != nil && d.base >= 0 {
		unix.Close(d.base)
	}
	d.base, d.shown, d.top, d.root = -1, nil, nil, nil
	return errors.Join(errs...)
}

func (d *Dest) dropCache() {
	if d.cached && d.cacheFd != d.base {
		unix.Close(d.cacheFd)
	}
	d.cached, d.cacheFd, d.cacheAt = false, -1, nil
}

// Finish ends the last tree, and returns what went wrong ending each.
func (d *Dest) Finish() error {
	err := errors.Join(append(d.ended, d.closeTree())...)
	d.ended = nil
	return err
}

// Abort ends a copy cut short: the directories made get their modes and
// every directory held open is closed.
func (d *Dest) Abort() {
	d.closeTree()
	d.ended = nil
}

// endTree ends the current tree before the next begins; what went wrong
// is told at Finish, naming each directory, not as the next root's
// problem.
func (d *Dest) endTree() {
	err := d.closeTree()
	if err == nil {
		return
	}
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		if len(d.ended) == maxEndedErrors {
			d.ended = append(d.ended, errors.New("and more directories whose modes and times were not set"))
		}
		if len(d.ended) > maxEndedErrors {
			return
		}
		d.ended = append(d.ended, e)
	}
}

// problemAt is a problem with one thing at the destination, named.
type problemAt struct {
	where []byte
	err   error
}

func (p *problemAt) Error() string { return p.err.Error() }

// Where names e at the destination; nil names the destination itself.
func (d *Dest) Where(e *protocol.Entry) []byte { return d.at(d.rel(e)) }

// at names rel, a path beneath base, as the user sees it.
func (d *Dest) at(rel []byte) []byte {
	if len(rel) == 0 {
		return d.Path
	}
	return join(d.shown, string(rel))
}

func (d *Dest) rel(e *protocol.Entry) []byte {
	switch {
	case e == nil:
		return nil
	case e == d.root:
		return d.top
	}
	return joinRel(d.top, e.Path)
}

func joinRel(top, p []byte) []byte {
	switch {
	case len(top) == 0:
		return p
	case len(p) == 0:
		return top
	}
	return join(top, string(p))
}

// CheckSources refuses dest for a copy of this many sources when the rule
// for several sources does not hold: they go only into an existing
// directory, as cp(1) takes them. Each end checks it before the copy
// begins, so that the copy is refused whole; Dest checks it again as each
// tree lands, for a destination replaced meanwhile.
func CheckSources(dest []byte, sources int) error {
	if sources < 2 {
		return nil
	}
	fi, err := os.Stat(string(dest))
	return sourcesInto(dest, sources, err == nil && fi.IsDir())
}

// sourcesInto is the rule for several sources, dest being a directory or
// not.
func sourcesInto(dest []byte, sources int, isDir bool) error {
	if sources > 1 && !isDir {
		return fmt.Errorf("destination %q must be an existing directory to copy %d sources into", dest, sources)
	}
	return nil
}

// Root resolves the destination for a new tree.
func (d *Dest) Root(e *protocol.Entry) (FileSink, error) {
	d.endTree()
	d.root = e
	d.shown = d.Path
	// The links at DEST itself are followed here, each checked before
	// anything goes through it (a link to a directory as much as one to
	// a file); from then on nothing follows a link.
	at, err := resolveDest(string(d.Path))
	if err != nil {
		return nil, err
	}
	defer at.close()
	slash := strings.HasSuffix(string(d.Path), "/")
	isDir := at.exists && at.st.Mode&unix.S_IFMT == unix.S_IFDIR
	if err := sourcesInto(d.Path, d.Sources, isDir); err != nil {
		return nil, err
	}
	switch {
	case at.exists && !isDir && slash:
		return nil, errors.New("not a directory")
	case !at.exists && slash:
		return nil, errors.New("no such directory (a destination ending in / must be an existing directory)")
	case e.Kind == protocol.EntryDir && at.exists && !isDir:
		return nil, errors.New("cannot copy a directory over this file")
	case isDir:
		if d.base, err = unix.Openat(at.dir, at.name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err != nil {
			return nil, errors.New(describe(err))
		}
		if !e.Contents || e.Kind != protocol.EntryDir {
			d.top = bytes.Clone(e.Path)
		}
	default:
		// A new name, or a file (a link there was written through, as
		// docker cp does: its target gets the contents, or is made).
		d.base, d.shown, d.top = at.dir, []byte(at.shown), []byte(at.name)
		at.dir = -1 // the base now
	}
	switch e.Kind {
	case protocol.EntryDir:
		return nil, d.mkdir(d.top, e)
	case protocol.EntrySymlink:
		return nil, d.symlink(d.top, e)
	}
	return d.file(d.top, e)
}

// maxLinks bounds the links followed from a destination, as the kernel's
// MAXSYMLINKS does a path's.
const maxLinks = 40

// destAt is where a destination leads: name, in the directory dir, is not
// a symbolic link (or is not there).
type destAt struct {
	dir    int
	name   string
	shown  string // dir as the user would name it, for messages
	st     unix.Stat_t
	exists bool
}

func (at *destAt) close() {
	if at.dir >= 0 {
		unix.Close(at.dir)
	}
}

// resolveDest follows the symbolic links at dest's last element (a
// dangling link's target included) as the kernel would: each link's
// target is taken relative to the directory the link really is in, found
// by descriptor, not by its name's text, where ".." after a link leads
// elsewhere. It follows a link only where the kernel's fs.protected_
// symlinks would let the user: one in a sticky directory anyone may write
// to, such as /tmp, must be the user's own or that directory owner's, or
// another user could plant it to have the copy write where they choose.
func resolveDest(dest string) (*destAt, error) {
	parent, name := splitDest(dest)
	dir, err := openDir(unix.AT_FDCWD, parent)
	if err != nil {
		return nil, fmt.Errorf("its parent directory: %s", describe(err))
	}
	at := &destAt{dir: dir, name: name, shown: parent}
	for range maxLinks {
		err := unix.Fstatat(at.dir, at.name, &at.st, unix.AT_SYMLINK_NOFOLLOW)
		if err == unix.ENOENT {
			return at, nil
		}
		if err == nil && at.st.Mode&unix.S_IFMT != unix.S_IFLNK {
			at.exists = true
			return at, nil
		}
		if err == nil {
			err = at.follow()
		}
		if err != nil {
			at.close()
			return nil, errors.New(describe(err))
		}
	}
	at.close()
	return nil, fmt.Errorf("more than %d symbolic links from the destination", maxLinks)
}

// follow moves at to the target of the link it names.
func (at *destAt) follow() error {
	if err := mayFollow(at.dir, at.shown+at.name, &at.st); err != nil {
		return err
	}
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(at.dir, at.name, buf)
	if err != nil {
		return err
	}
	target := string(buf[:n])
	parent, name := splitDest(target)
	from, shown := at.dir, at.shown+parent
	if strings.HasPrefix(target, "/") {
		from, shown = unix.AT_FDCWD, parent
	}
	next, err := openDir(from, parent)
	if err != nil {
		return err
	}
	unix.Close(at.dir)
	at.dir, at.name, at.shown = next, name, shown
	return nil
}

// splitDest splits p into the directory it is in, ending in a slash or
// empty, and its last element, without cleaning ".." away: after a link
// it does not mean what the text before it suggests.
func splitDest(p string) (string, string) {
	trimmed := strings.TrimRight(p, "/")
	if trimmed == "" {
		if p == "" {
			return "", "."
		}
		return "/", "."
	}
	i := strings.LastIndexByte(trimmed, '/')
	return trimmed[:i+1], trimmed[i+1:]
}

// openDir opens the directory at p from dir (any links on the way
// followed, as the user named them); an empty p is "." .
func openDir(dir int, p string) (int, error) {
	if p == "" {
		p = "."
	}
	return unix.Openat(dir, p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
}

// mayFollow applies the kernel's rule for following the link shown, in
// the directory dir, whose Lstat is st, as the calling thread's
// filesystem user.
func mayFollow(dir int, shown string, st *unix.Stat_t) error {
	var ds unix.Stat_t
	if err := unix.Fstat(dir, &ds); err != nil {
		return err
	}
	const stickyOpen = unix.S_ISVTX | 0o002
	if ds.Mode&stickyOpen != stickyOpen || st.Uid == ds.Uid {
		return nil
	}
	if fsUID() == st.Uid {
		return nil
	}
	return fmt.Errorf("not written through: %q is another user's symbolic link in a directory anyone may write to", shown)
}

// Dir makes a directory beneath the tree.
func (d *Dest) Dir(e *protocol.Entry) error { return d.mkdir(d.rel(e), e) }

// Symlink makes a symbolic link beneath the tree.
func (d *Dest) Symlink(e *protocol.Entry) error { return d.symlink(d.rel(e), e) }

// Hardlink makes another name for a file this copy wrote in the tree,
// beneath it: both names are reached by the same walk that follows no
// link, so neither can be outside; the file there must still be the one
// written (id), so that no file the destination held before gets a name
// the sender chose; and the new name replaces a file or link as a file
// would.
func (d *Dest) Hardlink(e *protocol.Entry, id FileID) error {
	target := &protocol.Entry{Path: e.Link}
	tdir, tname, err := d.parent(d.rel(target))
	if err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstatat(tdir, tname, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || idOf(&st) != id {
		return fmt.Errorf("not copied: a hard link to %q, which is no longer the file this copy wrote", d.Where(target))
	}
	// Its own fd: finding the new name's directory may close the cached one.
	if tdir, err = unix.Dup(tdir); err != nil {
		return errors.New(describe(err))
	}
	defer unix.Close(tdir)
	parent, name, err := d.parent(d.rel(e))
	if err != nil {
		return err
	}
	tmp := tmpName()
	if err := unix.Linkat(tdir, tname, parent, tmp, 0); err != nil {
		return fmt.Errorf("a hard link to %q: %s", d.Where(&protocol.Entry{Path: e.Link}), describe(err))
	}
	err = place(parent, tmp, name, "hard link")
	// A rename onto another name of the same file does nothing and
	// leaves tmp: it goes either way.
	unix.Unlinkat(parent, tmp, 0)
	return err
}

func idOf(st *unix.Stat_t) FileID { return FileID{Dev: uint64(st.Dev), Ino: uint64(st.Ino)} }

// File starts a file beneath the tree.
func (d *Dest) File(e *protocol.Entry) (FileSink, error) { return d.file(d.rel(e), e) }

// parent opens the directory rel is in, beneath base, following no link,
// and returns it with rel's last element.
func (d *Dest) parent(rel []byte) (int, string, error) {
	dir, name := []byte(nil), rel
	if i := bytes.LastIndexByte(rel, '/'); i >= 0 {
		dir, name = rel[:i], rel[i+1:]
	}
	if d.cached && bytes.Equal(dir, d.cacheAt) {
		return d.cacheFd, string(name), nil
	}
	d.dropCache()
	fd := d.base
	var walked []byte
	for elem := range bytes.SplitSeq(dir, []byte("/")) {
		if len(elem) == 0 {
			continue
		}
		walked = joinRel(walked, elem)
		next, err := unix.Openat(fd, string(elem), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if fd != d.base {
			unix.Close(fd)
		}
		if err != nil {
			if err == unix.ELOOP || err == unix.ENOTDIR {
				return -1, "", fmt.Errorf("not written: %q is a symbolic link or not a directory, and cork cp writes through neither", d.at(walked))
			}
			return -1, "", fmt.Errorf("%q: %s", d.at(walked), describe(err))
		}
		fd = next
	}
	d.cached, d.cacheFd, d.cacheAt = true, fd, bytes.Clone(dir)
	return fd, string(name), nil
}

func (d *Dest) mkdir(rel []byte, e *protocol.Entry) error {
	if len(rel) == 0 {
		return nil // the destination itself
	}
	parent, name, err := d.parent(rel)
	if err != nil {
		return err
	}
	err = unix.Mkdirat(parent, name, 0o700)
	if err == unix.EEXIST {
		var st unix.Stat_t
		if err := unix.Fstatat(parent, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
		if uint32(st.Mode)&unix.S_IFMT != unix.S_IFDIR {
			return fmt.Errorf("cannot copy a directory over the %s there", typeOf(uint32(st.Mode)))
		}
		return d.remember(madeDir{rel: string(rel), mode: e.Mode, modTime: e.ModTime, merged: true}, e)
	}
	if err != nil {
		return errors.New(describe(err))
	}
	return d.remember(madeDir{rel: string(rel), mode: e.Mode, modTime: e.ModTime}, e)
}

// remember keeps a directory to finish at the end of the tree, or
// finishes it at once beyond the bound; a directory met again (a sender
// may name one any number of times) is kept once, with what it said last.
// A directory made gets e's owner at once.
func (d *Dest) remember(m madeDir, e *protocol.Entry) error {
	if i, ok := d.dirAt[m.rel]; ok {
		m.merged = m.merged && d.dirs[i].merged
		d.dirs[i] = m
		return nil
	}
	cost := len(m.rel) + madeDirCost
	later := d.dirMem+cost <= maxMadeDirBytes
	if later {
		if d.dirAt == nil {
			d.dirAt = map[string]int{}
		}
		d.dirAt[m.rel] = len(d.dirs)
		d.dirs = append(d.dirs, m)
		d.dirMem += cost
	}
	if !m.merged {
		if err := d.ownDir(m.rel, e); err != nil {
			d.unmake(m, later)
			return err
		}
	}
	if later {
		return nil
	}
	return d.finishDir(m)
}

// unmake removes a directory just made whose owner could not be given:
// like a file's, its failure means it is not copied, and what it would
// hold is not copied either.
func (d *Dest) unmake(m madeDir, remembered bool) {
	if remembered {
		d.dirs = d.dirs[:len(d.dirs)-1]
		delete(d.dirAt, m.rel)
		d.dirMem -= len(m.rel) + madeDirCost
	}
	if parent, name, err := d.parent([]byte(m.rel)); err == nil {
		unix.Unlinkat(parent, name, unix.AT_REMOVEDIR)
	}
}

// ownDir gives a directory made here its owner, at once: what is written
// into it must not change hands later.
func (d *Dest) ownDir(rel string, e *protocol.Entry) error {
	if !d.KeepOwners {
		return nil
	}
	parent, name, err := d.parent([]byte(rel))
	if err != nil {
		return err
	}
	if err := unix.Fchownat(parent, name, int(e.UID), int(e.GID), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("owner %d:%d not kept: %s", e.UID, e.GID, describe(err))
	}
	return nil
}

// finishDir gives a directory its mode and time, through one descriptor;
// what fails is named.
func (d *Dest) finishDir(m madeDir) error {
	err := d.setDir(m)
	if m.merged && err == unix.EPERM {
		return nil // another's directory, merged into, keeps its mode
	}
	if err != nil {
		return &problemAt{where: d.at([]byte(m.rel)), err: fmt.Errorf("its mode and time not set: %s", describe(err))}
	}
	return nil
}

func (d *Dest) setDir(m madeDir) error {
	parent, name, err := d.parent([]byte(m.rel))
	if err != nil {
		return err
	}
	fd, err := unix.Openat(parent, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	mode := protocol.UnixMode(m.mode)
	if m.merged && !d.KeepOwners {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return err
		}
		mode = mergedMode(uint32(st.Mode), mode)
	}
	if err := unix.Fchmod(fd, mode); err != nil {
		return err
	}
	return futimens(fd, m.modTime)
}

// mergedMode is the mode a directory that was there (had) keeps when a
// source directory of mode src is merged into it: its permission bits
// narrowed by the source's, never widened, and its sticky, set-group-ID
// and set-user-ID bits as they were. A sender could otherwise open a
// user's ~/.ssh to everyone, or take the sticky bit off /tmp; -a keeps
// the source's mode as it is.
func mergedMode(had, src uint32) uint32 {
	const special = unix.S_ISUID | unix.S_ISGID | unix.S_ISVTX
	return had&src&0o777 | had&special
}

func (d *Dest) symlink(rel []byte, e *protocol.Entry) error {
	parent, name, err := d.parent(rel)
	if err != nil {
		return err
	}
	tmp := tmpName()
	if err := unix.Symlinkat(string(e.Link), parent, tmp); err != nil {
		return errors.New(describe(err))
	}
	if err := d.placeLink(parent, tmp, name, e); err != nil {
		unix.Unlinkat(parent, tmp, 0)
		return err
	}
	return nil
}

func (d *Dest) placeLink(parent int, tmp, name string, e *protocol.Entry) error {
	if d.KeepOwners {
		if err := unix.Fchownat(parent, tmp, int(e.UID), int(e.GID), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("owner %d:%d not kept: %s", e.UID, e.GID, describe(err))
		}
	}
	setTimes(parent, tmp, e) // a link's time is kept where the system can
	return place(parent, tmp, name, "symbolic link")
}

// place renames tmp to name in parent, which replaces a file or a link
// there but never a directory.
func place(parent int, tmp, name, what string) error {
	err := unix.Renameat(parent, tmp, parent, name)
	if err == unix.EISDIR || err == unix.ENOTEMPTY || err == unix.EEXIST {
		return fmt.Errorf("cannot copy a %s over the directory there", what)
	}
	if err != nil {
		return errors.New(describe(err))
	}
	return nil
}

func (d *Dest) file(rel []byte, e *protocol.Entry) (FileSink, error) {
	parent, name, err := d.parent(rel)
	if err != nil {
		return nil, err
	}
	tmp := tmpName()
	fd, err := unix.Openat(parent, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, errors.New(describe(err))
	}
	return &destFile{d: d, parent: parent, fd: fd, tmp: tmp, name: name, e: e}, nil
}

// destFile is a file being received under a temporary name.
type destFile struct {
	d         *Dest
	parent    int
	fd        int
	tmp, name string
	e         *protocol.Entry
	id        FileID // the file put in place, once committed
}

func (f *destFile) Write(p []byte) (int, error) {
	for n := 0; n < len(p); {
		m, err := unix.Write(f.fd, p[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, errors.New(describe(err))
		}
		n += m
	}
	return len(p), nil
}

func (f *destFile) Commit() error {
	var st unix.Stat_t
	err := f.finish()
	if err == nil {
		err = unix.Fstat(f.fd, &st)
	}
	unix.Close(f.fd)
	if err == nil {
		err = place(f.parent, f.tmp, f.name, "file")
	}
	if err != nil {
		unix.Unlinkat(f.parent, f.tmp, 0)
		return err
	}
	f.id = idOf(&st)
	return nil
}

// identity is the file Commit put in place.
func (f *destFile) identity() FileID { return f.id }

func (f *destFile) finish() error {
	if f.d.KeepOwners {
		if err := unix.Fchown(f.fd, int(f.e.UID), int(f.e.GID)); err != nil {
			return fmt.Errorf("owner %d:%d not kept: %s", f.e.UID, f.e.GID, describe(err))
		}
	}
	// After the owner: a change of owner clears set-user-ID.
	if err := unix.Fchmod(f.fd, protocol.UnixMode(f.e.Mode)); err != nil {
		return errors.New(describe(err))
	}
	return setTimes(f.parent, f.tmp, f.e)
}

func (f *destFile) Abort() {
	unix.Close(f.fd)
	unix.Unlinkat(f.parent, f.tmp, 0)
}

func setTimes(dir int, name string, e *protocol.Entry) error {
	t := unix.NsecToTimespec(e.ModTime.UnixNano())
	return unix.UtimesNanoAt(dir, name, []unix.Timespec{t, t}, unix.AT_SYMLINK_NOFOLLOW)
}

func tmpName() string {
	var b [8]byte
	rand.Read(b[:])
	return tmpPrefix + hex.EncodeToString(b[:])
}

func typeOf(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFLNK:
		return "symbolic link"
	case unix.S_IFREG:
		return "file"
	}
	return "non-directory"
}
