package copytree

import (
	"fmt"
	"strings"
	"testing"
)

// TestFileSetBound: the set takes paths up to its bound in bytes, each
// entry's cost counted; past it, what it holds is still there, and what
// it could not take is refused with a reason that says so.
func TestFileSetBound(t *testing.T) {
	var s fileSet
	n := 0
	for ; !s.full; n++ {
		s.add([]byte(fmt.Sprintf("dir/file-%07d", n)), FileID{Ino: uint64(n)})
	}
	if s.bytes > maxFileSetBytes || len(s.ids) != n-1 {
		t.Fatalf("%d bytes for %d entries of %d added", s.bytes, len(s.ids), n)
	}
	if id, ok := s.get([]byte("dir/file-0000000")); !ok || id.Ino != 0 {
		t.Fatal("the first path is gone")
	}
	if _, ok := s.get([]byte(fmt.Sprintf("dir/file-%07d", n-1))); ok {
		t.Fatal("the path past the bound is there")
	}
	if !strings.Contains(s.refusal(), "remembers") {
		t.Fatalf("refusal %q does not say the set is full", s.refusal())
	}
	s.add([]byte("dir/file-0000000"), FileID{Ino: 9}) // a name taken again costs nothing more
	if id, _ := s.get([]byte("dir/file-0000000")); id.Ino != 9 {
		t.Fatal("a name landed again keeps its old file")
	}
}
