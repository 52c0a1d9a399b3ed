package copytree

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/corkvm/cork/protocol"
)

// Sink takes the trees a copy receives. An error from Root, Dir, Symlink
// or File is a problem with that entry alone (a directory's is with all it
// holds): Receive tells it to Problem and goes on.
type Sink interface {
	// Root begins a tree. A file's or link's root is the whole tree; a
	// file root's data follows on the FileSink returned.
	Root(e *protocol.Entry) (FileSink, error)
	Dir(e *protocol.Entry) error
	Symlink(e *protocol.Entry) error
	// Hardlink makes e another name for the file at e.Link in the tree,
	// which landed in this copy as id (its FileSink's identity, where it
	// has one: a sink that checks it refuses a link to anything else).
	Hardlink(e *protocol.Entry, id FileID) error
	File(e *protocol.Entry) (FileSink, error)
	// Finish ends the last tree: deferred directory modes are applied.
	Finish() error
	// Abort ends a copy cut short: what the sink holds is released and
	// the directories it made get their modes. Receive calls it, instead
	// of Finish, on every error.
	Abort()
	// Where names an entry of the current tree as the user sees it at the
	// destination, for messages; nil names the destination.
	Where(e *protocol.Entry) []byte
}

// FileSink takes a file's bytes: Commit puts it in place once they are
// all there, Abort drops what came.
type FileSink interface {
	io.Writer
	Commit() error
	Abort()
}

// Receiver reads a copy's trees from R into a Sink.
type Receiver struct {
	R    *protocol.Reader
	Sink Sink
	// Problem is told about each thing not written, named as at the
	// destination; a sender's own problems (CopyProblem frames) come here
	// too, when the sender is the guest.
	Problem func(path []byte, message string, skipped bool)
	// Progress, when set, is called after each entry and each chunk with
	// the files landed and the bytes received so far.
	Progress func(files int, bytes int64)
	// SenderProblems admits CopyProblem frames: the guest sends them, the
	// host does not.
	SenderProblems bool

	Files    int   // files and links that landed; directories are not counted
	Bytes    int64 // the bytes of the files that landed
	Problems int   // failures, the sender's and the receiver's

	received int64 // file bytes received, landed or not: for Progress

	inTree  bool      // a directory root came: entries may follow
	skipDir []byte    // the last directory that failed: what it holds is skipped; empty: all
	file    *incoming // the file whose data comes, if any
	landed  fileSet   // the tree's files that landed: a hard link may name only these
}

// incoming is the file whose data is coming: the one owner of its
// FileSink, which is nil when the file is skipped or has failed.
type incoming struct {
	e    *protocol.Entry
	sink FileSink
	left int64 // bytes still to come
}

// abort drops what came of the file, if it is still open.
func (f *incoming) abort() {
	if f != nil && f.sink != nil {
		f.sink.Abort()
		f.sink = nil
	}
}

// Receive writes what comes until the sender's CopyDone, which it returns.
// An error is the connection's or the sender's breach of the protocol, or
// an Error frame (a *protocol.Error); problems with entries are not. On
// an error the file being received is dropped and the Sink aborted, so
// that nothing taken for the copy outlives it.
func (r *Receiver) Receive() (done *protocol.CopyDone, err error) {
	defer func() {
		r.file.abort()
		r.file = nil
		if done == nil {
			r.Sink.Abort()
		}
	}()
	for done == nil && err == nil {
		t, p, rerr := r.R.NextShared()
		if rerr == io.EOF {
			return nil, fmt.Errorf("copy: the connection ended before the copy was done: %w", io.ErrUnexpectedEOF)
		}
		if rerr != nil {
			return nil, rerr
		}
		done, err = r.frame(t, p)
	}
	return done, err
}

// frame handles one frame; p is valid only until the next read.
func (r *Receiver) frame(t protocol.Type, p []byte) (*protocol.CopyDone, error) {
	// A sender tells a file's problem as it meets it, before the file's
	// CopyEnd (a file that shrank while it was read).
	midFile := t == protocol.TypeCopyData || t == protocol.TypeCopyEnd || t == protocol.TypeCopyProblem
	if r.file != nil && !midFile {
		return nil, fmt.Errorf("copy: %s frame in the middle of file %q", t, r.file.e.Path)
	}
	switch t {
	case protocol.TypeCopyRoot:
		return nil, r.root(p)
	case protocol.TypeCopyEntry:
		return nil, r.entry(p)
	case protocol.TypeCopyData:
		return nil, r.data(p)
	case protocol.TypeCopyEnd:
		return nil, r.end(p)
	case protocol.TypeCopyProblem:
		return nil, r.senderProblem(p)
	case protocol.TypeCopyDone:
		return r.done(p)
	case protocol.TypeError:
		var perr protocol.Error
		if err := protocol.Decode(t, p, &perr); err != nil {
			return nil, err
		}
		return nil, &perr
	}
	return nil, fmt.Errorf("copy: unexpected %s frame", t)
}

func (r *Receiver) root(p []byte) error {
	e, err := protocol.DecodeEntry(bytes.Clone(p), true)
	if err != nil {
		return err
	}
	r.inTree, r.skipDir = e.Kind == protocol.EntryDir, nil
	r.landed.reset()
	f, err := r.Sink.Root(e)
	if err != nil {
		if e.Kind == protocol.EntryDir {
			err = fmt.Errorf("%w (nothing in it is copied)", err)
		}
		r.fail(r.Sink.Where(e), err)
		r.inTree, r.skipDir = false, []byte{} // a failed root: all beneath it is skipped, named by it
	} else if e.Kind == protocol.EntrySymlink {
		r.count(0)
	}
	if e.Kind == protocol.EntryFile {
		r.file = &incoming{e: e, sink: f, left: e.Size}
	}
	return nil
}

func (r *Receiver) entry(p []byte) error {
	e, err := protocol.DecodeEntry(bytes.Clone(p), false)
	if err != nil {
		return err
	}
	if !r.inTree && r.skipDir == nil {
		return fmt.Errorf("copy: entry %q outside a directory tree", e.Path)
	}
	if r.skipDir != nil && beneath(e.Path, r.skipDir) {
		if e.Kind == protocol.EntryFile {
			r.file = &incoming{e: e, left: e.Size} // its data is read and dropped
		}
		if len(r.skipDir) > 0 {
			r.fail(r.Sink.Where(e), errNotBeneath)
		}
		return nil
	}
	if len(r.skipDir) > 0 {
		r.skipDir = nil
	}
	var f FileSink
	switch e.Kind {
	case protocol.EntryDir:
		if err = r.Sink.Dir(e); err != nil {
			r.skipDir = e.Path
		}
	case protocol.EntrySymlink:
		if err = r.Sink.Symlink(e); err == nil {
			r.landed.remove(e.Path) // a link now has the name
		}
	case protocol.EntryHardlink:
		err = r.hardlink(e)
	case protocol.EntryFile:
		f, err = r.Sink.File(e)
		r.file = &incoming{e: e, sink: f, left: e.Size}
	}
	if err != nil {
		r.fail(r.Sink.Where(e), err)
	} else if e.Kind == protocol.EntrySymlink || e.Kind == protocol.EntryHardlink {
		r.count(0)
	}
	return nil
}

// hardlink makes e, a hard link, if it names a file of the tree that
// landed: a sender may not give a second name to a file that was there
// before the copy.
func (r *Receiver) hardlink(e *protocol.Entry) error {
	id, ok := r.landed.get(e.Link)
	if !ok {
		return fmt.Errorf("not copied: a hard link to %q, %s", r.Sink.Where(&protocol.Entry{Path: e.Link}), r.landed.refusal())
	}
	if err := r.Sink.Hardlink(e, id); err != nil {
		return err
	}
	r.landed.add(e.Path, id)
	return nil
}

func (r *Receiver) data(p []byte) error {
	f := r.file
	if f == nil {
		return fmt.Errorf("copy: %d bytes of data outside a file", len(p))
	}
	if int64(len(p)) > f.left {
		return fmt.Errorf("copy: file %q: more than its %d bytes", f.e.Path, f.e.Size)
	}
	f.left -= int64(len(p))
	r.received += int64(len(p))
	if f.sink != nil {
		if _, err := f.sink.Write(p); err != nil {
			f.abort()
			r.fail(r.Sink.Where(f.e), err)
		}
	}
	r.progress()
	return nil
}

func (r *Receiver) end(p []byte) error {
	f := r.file
	if f == nil {
		return fmt.Errorf("copy: %s outside a file", protocol.TypeCopyEnd)
	}
	var end protocol.CopyEnd
	if err := protocol.Decode(protocol.TypeCopyEnd, p, &end); err != nil {
		return err
	}
	if end.Error == "" && f.left != 0 {
		return fmt.Errorf("copy: file %q ended %d bytes short of its %d", f.e.Path, f.left, f.e.Size)
	}
	r.file = nil
	if end.Error != "" || f.sink == nil {
		f.abort() // the sender has told its problem, or the file was dropped
		return nil
	}
	err := f.sink.Commit()
	sink := f.sink
	f.sink = nil
	if err != nil {
		r.fail(r.Sink.Where(f.e), err)
		return nil
	}
	var id FileID
	if s, ok := sink.(interface{ identity() FileID }); ok {
		id = s.identity()
	}
	r.landed.add(f.e.Path, id)
	r.count(f.e.Size)
	return nil
}

func (r *Receiver) senderProblem(p []byte) error {
	if !r.SenderProblems {
		return fmt.Errorf("copy: unexpected %s frame", protocol.TypeCopyProblem)
	}
	var pr protocol.CopyProblem
	if err := protocol.Decode(protocol.TypeCopyProblem, p, &pr); err != nil {
		return err
	}
	tellProblem(r.Problem, &r.Problems, pr.Path, pr.Message, pr.Skipped)
	return nil
}

func (r *Receiver) done(p []byte) (*protocol.CopyDone, error) {
	var done protocol.CopyDone
	if err := protocol.Decode(protocol.TypeCopyDone, p, &done); err != nil {
		return nil, err
	}
	r.failEach(r.Sink.Finish())
	return &done, nil
}

// failEach tells each problem in err (errors.Join's, nested), named where
// the sink says, or else as the destination.
func (r *Receiver) failEach(err error) {
	switch e := err.(type) {
	case nil:
	case *problemAt:
		r.fail(e.where, e.err)
	case interface{ Unwrap() []error }:
		for _, one := range e.Unwrap() {
			r.failEach(one)
		}
	default:
		r.fail(nil, err)
	}
}

// errNotBeneath names each entry beneath a directory of the tree that
// failed: every thing not copied is named. (A failed root's one problem
// names the whole tree, which the user named.)
var errNotBeneath = errors.New("not copied, as the directory it is in was not")

// beneath reports whether p is dir or beneath it; an empty dir holds all.
func beneath(p, dir []byte) bool {
	if len(dir) == 0 {
		return true
	}
	return bytes.Equal(p, dir) || (bytes.HasPrefix(p, dir) && p[len(dir)] == '/')
}

// count counts a file or link put in place.
func (r *Receiver) count(size int64) {
	r.Files++
	r.Bytes += size
	r.progress()
}

func (r *Receiver) progress() { tellProgress(r.Progress, r.Files, r.received) }

func (r *Receiver) fail(where []byte, err error) {
	tellProblem(r.Problem, &r.Problems, where, err.Error(), false)
}
