package copytree

import (
	"bytes"
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
	File(e *protocol.Entry) (FileSink, error)
	// Finish ends the last tree: deferred directory modes are applied.
	Finish() error
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
	// Progress, when set, is called after each entry and each chunk.
	Progress func(files int, bytes int64)
	// SenderProblems admits CopyProblem frames: the guest sends them, the
	// host does not.
	SenderProblems bool

	Files    int   // entries written
	Bytes    int64 // file bytes received
	Problems int   // failures, the sender's and the receiver's
}

// Receive writes what comes until the sender's CopyDone, which it returns.
// An error is the connection's or the sender's breach of the protocol, or
// an Error frame (a *protocol.Error); problems with entries are not.
func (r *Receiver) Receive() (*protocol.CopyDone, error) {
	var (
		inTree  bool            // a directory root came: entries may follow
		skipDir []byte          // the last directory that failed: what it holds is skipped
		file    FileSink        // the file being received; nil when it is skipped
		fileE   *protocol.Entry // the file entry whose data comes, if any
		left    int64           // its bytes still to come
	)
	for {
		t, p, err := r.R.NextShared()
		if err != nil {
			if file != nil {
				file.Abort()
			}
			if err == io.EOF {
				return nil, fmt.Errorf("copy: the connection ended before the copy was done: %w", io.ErrUnexpectedEOF)
			}
			return nil, err
		}
		if fileE != nil && t != protocol.TypeCopyData && t != protocol.TypeCopyEnd {
			if file != nil {
				file.Abort()
			}
			return nil, fmt.Errorf("copy: %s frame in the middle of file %q", t, fileE.Path)
		}
		switch t {
		case protocol.TypeCopyRoot:
			e, err := protocol.DecodeEntry(bytes.Clone(p), true)
			if err != nil {
				return nil, err
			}
			inTree, skipDir = e.Kind == protocol.KindDir, nil
			f, err := r.Sink.Root(e)
			if err != nil {
				r.fail(r.Sink.Where(nil), err)
				inTree = false
				skipDir = []byte{} // a failed root: all beneath it is skipped
			} else {
				r.written()
			}
			if e.Kind == protocol.KindFile {
				file, fileE, left = f, e, e.Size
			}
		case protocol.TypeCopyEntry:
			e, err := protocol.DecodeEntry(bytes.Clone(p), false)
			if err != nil {
				return nil, err
			}
			if !inTree && skipDir == nil {
				return nil, fmt.Errorf("copy: entry %q outside a directory tree", e.Path)
			}
			if skipDir != nil && beneath(e.Path, skipDir) {
				if e.Kind == protocol.KindFile {
					file, fileE, left = nil, e, e.Size
				}
				continue
			}
			if len(skipDir) > 0 {
				skipDir = nil
			}
			switch e.Kind {
			case protocol.KindDir:
				err = r.Sink.Dir(e)
				if err != nil {
					skipDir = e.Path
				}
			case protocol.KindSymlink:
				err = r.Sink.Symlink(e)
			case protocol.KindFile:
				var f FileSink
				f, err = r.Sink.File(e)
				file, fileE, left = f, e, e.Size
			}
			if err != nil {
				r.fail(r.Sink.Where(e), err)
			} else {
				r.written()
			}
		case protocol.TypeCopyData:
			if fileE == nil {
				return nil, fmt.Errorf("copy: %d bytes of data outside a file", len(p))
			}
			if int64(len(p)) > left {
				return nil, fmt.Errorf("copy: file %q: more than its %d bytes", fileE.Path, fileE.Size)
			}
			left -= int64(len(p))
			r.Bytes += int64(len(p))
			if file != nil {
				if _, err := file.Write(p); err != nil {
					file.Abort()
					file = nil
					r.fail(r.Sink.Where(fileE), err)
				}
			}
			r.progress()
		case protocol.TypeCopyEnd:
			if fileE == nil {
				return nil, fmt.Errorf("copy: %s outside a file", t)
			}
			var end protocol.CopyEnd
			if err := protocol.Decode(t, p, &end); err != nil {
				return nil, err
			}
			if end.Error == "" && left != 0 {
				return nil, fmt.Errorf("copy: file %q ended %d bytes short of its %d", fileE.Path, left, fileE.Size)
			}
			if file != nil {
				if end.Error != "" {
					file.Abort() // the sender has told its problem
				} else if err := file.Commit(); err != nil {
					r.fail(r.Sink.Where(fileE), err)
				}
			}
			file, fileE = nil, nil
		case protocol.TypeCopyProblem:
			if !r.SenderProblems {
				return nil, fmt.Errorf("copy: unexpected %s frame", t)
			}
			var pr protocol.CopyProblem
			if err := protocol.Decode(t, p, &pr); err != nil {
				return nil, err
			}
			if !pr.Skipped {
				r.Problems++
			}
			if r.Problem != nil {
				r.Problem(pr.Path, pr.Message, pr.Skipped)
			}
		case protocol.TypeCopyDone:
			var done protocol.CopyDone
			if err := protocol.Decode(t, p, &done); err != nil {
				return nil, err
			}
			if err := r.Sink.Finish(); err != nil {
				r.fail(nil, err)
			}
			return &done, nil
		case protocol.TypeError:
			var perr protocol.Error
			if err := protocol.Decode(t, p, &perr); err != nil {
				return nil, err
			}
			return nil, &perr
		default:
			return nil, fmt.Errorf("copy: unexpected %s frame", t)
		}
	}
}

// beneath reports whether p is dir or beneath it; an empty dir holds all.
func beneath(p, dir []byte) bool {
	if len(dir) == 0 {
		return true
	}
	return bytes.Equal(p, dir) || (bytes.HasPrefix(p, dir) && p[len(dir)] == '/')
}

func (r *Receiver) written() {
	r.Files++
	r.progress()
}

func (r *Receiver) progress() {
	if r.Progress != nil {
		r.Progress(r.Files, r.Bytes)
	}
}

func (r *Receiver) fail(where []byte, err error) {
	r.Problems++
	if r.Problem != nil {
		r.Problem(where, err.Error(), false)
	}
}
