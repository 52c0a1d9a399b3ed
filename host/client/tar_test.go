package client

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/copytree"
)

// receiveTar runs the frames an agent would send through a Receiver into
// a TarSink and returns the stream's entries, "name" for a file or
// directory and "name=>link" for a hard link, and the problems told.
func receiveTar(t *testing.T, frames func(w *protocol.Writer)) (entries, problems []string) {
	t.Helper()
	pr, pw := io.Pipe()
	go func() {
		frames(protocol.NewWriter(pw))
		pw.Close()
	}()
	var out bytes.Buffer
	r := &copytree.Receiver{R: protocol.NewReader(pr), Sink: NewTarSink(&out), SenderProblems: true,
		Problem: func(p []byte, msg string, _ bool) { problems = append(problems, string(p)+": "+msg) }}
	if _, err := r.Receive(); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&out)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return entries, problems
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeLink {
			entries = append(entries, h.Name+"=>"+h.Linkname)
		} else {
			entries = append(entries, h.Name)
		}
	}
}

func frameEntry(t *testing.T, w *protocol.Writer, typ protocol.Type, e protocol.Entry) {
	t.Helper()
	b, err := protocol.EncodeEntry(&e)
	if err != nil {
		t.Fatal(err)
	}
	w.WriteFrame(typ, b)
}

// TestTarSinkHardLinksOnlyToWhatCame: a hard link in what the agent sends
// becomes a link in the tar stream only when it names a file the stream
// holds: one naming any other path would have tar -x give a second name
// to a file of the directory it extracts into.
func TestTarSinkHardLinksOnlyToWhatCame(t *testing.T) {
	entries, problems := receiveTar(t, func(w *protocol.Writer) {
		frameEntry(t, w, protocol.TypeCopyRoot, protocol.Entry{Kind: protocol.EntryDir, Mode: 0o755, Path: []byte("t")})
		frameEntry(t, w, protocol.TypeCopyEntry, protocol.Entry{Kind: protocol.EntryFile, Mode: 0o644, Size: 1, Path: []byte("a")})
		w.WriteFrame(protocol.TypeCopyData, []byte("x"))
		w.WriteJSON(protocol.TypeCopyEnd, &protocol.CopyEnd{})
		frameEntry(t, w, protocol.TypeCopyEntry, protocol.Entry{Kind: protocol.EntryHardlink, Path: []byte("b"), Link: []byte("a")})
		frameEntry(t, w, protocol.TypeCopyEntry, protocol.Entry{Kind: protocol.EntryHardlink, Path: []byte("leak"), Link: []byte("private/secret")})
		w.WriteJSON(protocol.TypeCopyDone, &protocol.CopyDone{})
	})
	if got := strings.Join(entries, " "); got != "t/ t/a t/b=>t/a" {
		t.Errorf("the stream holds %s", got)
	}
	if len(problems) != 1 || !strings.HasPrefix(problems[0], "t/leak: ") || !strings.Contains(problems[0], "not a file that this copy wrote") {
		t.Errorf("problems %q", problems)
	}
}

// TestSendTarLinksByCurrentName: a hard link in a tar stream names what
// has that name at that point of the stream, as tar -x takes it: after
// the file's first name was replaced, a link to its second name still
// links the file, not what replaced the first.
func TestSendTarLinksByCurrentName(t *testing.T) {
	var in bytes.Buffer
	tw := tar.NewWriter(&in)
	tw.WriteHeader(&tar.Header{Name: "a", Typeflag: tar.TypeReg, Mode: 0o644, Size: 4})
	tw.Write([]byte("data"))
	tw.WriteHeader(&tar.Header{Name: "b", Typeflag: tar.TypeLink, Linkname: "a"})
	tw.WriteHeader(&tar.Header{Name: "a", Typeflag: tar.TypeSymlink, Linkname: "elsewhere", Mode: 0o777})
	tw.WriteHeader(&tar.Header{Name: "c", Typeflag: tar.TypeLink, Linkname: "b"})
	tw.Close()

	out := t.TempDir()
	pr, pw := io.Pipe()
	var problems []string
	tell := func(p []byte, msg string, _ bool) { problems = append(problems, string(p)+": "+msg) }
	go func() {
		w := protocol.NewWriter(pw)
		s := &copytree.Sender{W: w, Hardlinks: true, Problem: tell}
		if err := SendTar(s, &in); err != nil {
			pw.CloseWithError(err)
			return
		}
		w.WriteJSON(protocol.TypeCopyDone, &protocol.CopyDone{})
		pw.Close()
	}()
	r := &copytree.Receiver{R: protocol.NewReader(pr), Sink: &copytree.Dest{Path: []byte(out)}, Problem: tell}
	if _, err := r.Receive(); err != nil {
		t.Fatal(err)
	}
	if len(problems) > 0 {
		t.Fatalf("problems %q", problems)
	}
	b, errB := os.Stat(filepath.Join(out, "b"))
	c, errC := os.Lstat(filepath.Join(out, "c"))
	if errB != nil || errC != nil || !os.SameFile(b, c) {
		t.Fatalf("c is not a name of b's file: %v, %v", errB, errC)
	}
	if l, err := os.Readlink(filepath.Join(out, "a")); err != nil || l != "elsewhere" {
		t.Fatalf("a: %q, %v", l, err)
	}
}
