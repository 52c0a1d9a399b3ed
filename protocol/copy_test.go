package protocol

import (
	"bytes"
	"io/fs"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestEntryRoundTrip(t *testing.T) {
	for _, e := range []*Entry{
		{Kind: EntryFile, Mode: 0o644 | fs.ModeSetuid, UID: 1000, GID: 1000, ModTime: time.Unix(1700000000, 123456789), Size: 1 << 40, Path: []byte("a/b/c.txt")},
		{Kind: EntryDir, Mode: 0o755 | fs.ModeSticky | fs.ModeSetgid, ModTime: time.Unix(-5, 0), Path: []byte("dir")},
		{Kind: EntrySymlink, Mode: 0o777, Path: []byte("new\nline/\xff\xfe"), Link: []byte("../../etc/passwd")},
	} {
		b, err := EncodeEntry(e)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeEntry(b, false)
		if err != nil {
			t.Fatalf("%q: %v", e.Path, err)
		}
		if !got.ModTime.Equal(e.ModTime) {
			t.Fatalf("%q: time %v, want %v", e.Path, got.ModTime, e.ModTime)
		}
		got.ModTime = e.ModTime
		if !reflect.DeepEqual(got.Path, e.Path) || got.Kind != e.Kind || got.Mode != e.Mode || got.UID != e.UID || got.Size != e.Size || !bytes.Equal(got.Link, e.Link) {
			t.Fatalf("got %+v, want %+v", got, e)
		}
	}
	root := &Entry{Kind: EntryDir, Contents: true, Mode: 0o700}
	b, _ := EncodeEntry(root)
	if got, err := DecodeEntry(b, true); err != nil || !got.Contents {
		t.Fatalf("a contents root: %+v, %v", got, err)
	}
}

// TestEntryRefused: every path that could name something outside its tree
// is refused by the decoder, whichever side sent it.
func TestEntryRefused(t *testing.T) {
	entry := func(kind EntryKind, path, link string) []byte {
		b, err := EncodeEntry(&Entry{Kind: kind, Path: []byte(path), Link: []byte(link)})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for name, c := range map[string]struct {
		p    []byte
		root bool
		want string
	}{
		"absolute":             {entry(EntryFile, "/etc/passwd", ""), false, "absolute"},
		"dot dot":              {entry(EntryFile, "a/../../x", ""), false, `".."`},
		"dot":                  {entry(EntryFile, "./x", ""), false, `"."`},
		"empty element":        {entry(EntryFile, "a//b", ""), false, "empty element"},
		"trailing slash":       {entry(EntryDir, "a/", ""), false, "empty element"},
		"empty":                {entry(EntryFile, "", ""), false, "empty path"},
		"NUL":                  {entry(EntryFile, "a\x00b", ""), false, "NUL"},
		"link without target":  {entry(EntrySymlink, "l", ""), false, "target is empty"},
		"file with target":     {entry(EntryFile, "f", "x"), false, "link target"},
		"root with a slash":    {entry(EntryDir, "a/b", ""), true, "not one path element"},
		"root dot dot":         {entry(EntryDir, "..", ""), true, "not one path element"},
		"root without a name":  {entry(EntryDir, "", ""), true, "no name"},
		"short":                {[]byte{1, 0, 0}, false, "shorter"},
		"unknown kind":         {append([]byte{9}, entry(EntryFile, "f", "")[1:]...), false, "unknown entry kind"},
		"length lies":          {append(entry(EntryFile, "f", ""), 'x'), false, "its fields say"},
		"mode beyond 07777":    {func() []byte { b := entry(EntryFile, "f", ""); b[2] = 1; return b }(), false, "beyond 07777"},
		"unknown flags":        {func() []byte { b := entry(EntryFile, "f", ""); b[1] = 2; return b }(), false, "flags"},
		"contents not at root": {func() []byte { b := entry(EntryDir, "d", ""); b[1] = 1; return b }(), false, "only a root"},
	} {
		_, err := DecodeEntry(c.p, c.root)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", name, err, c.want)
		}
	}
	if _, err := EncodeEntry(&Entry{Kind: EntryFile, Path: bytes.Repeat([]byte("a"), MaxPathBytes+1)}); err == nil {
		t.Error("a path over MaxPathBytes encoded")
	}
}

func TestCopyRequestsValidate(t *testing.T) {
	if err := (&CopyIn{Dest: []byte("/x"), Sources: 1}).Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []CopyIn{{Sources: 1}, {Dest: []byte("/x")}, {Dest: []byte("/x\x00"), Sources: 1}, {Dest: []byte("/x"), Sources: MaxCopySources + 1}} {
		if bad.Validate() == nil {
			t.Errorf("%+v validated", bad)
		}
	}
	if err := (&CopyOut{Paths: [][]byte{[]byte("/x")}}).Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []CopyOut{{}, {Paths: [][]byte{nil}}, {Paths: [][]byte{[]byte("a\x00")}}} {
		if bad.Validate() == nil {
			t.Errorf("%+v validated", bad)
		}
	}
}
