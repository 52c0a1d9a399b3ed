package account

import (
	"errors"
	"fmt"
	"os/user"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
)

// files is a machine's /etc/passwd and /etc/group, in memory.
func files(passwd, group string) Files {
	return Files{FS: fstest.MapFS{
		"etc/passwd": {Data: []byte(passwd)},
		"etc/group":  {Data: []byte(group)},
	}}
}

var image = files(`root:x:0:0:root:/root:/bin/bash
# a comment, then a blank line

  node:x:1000:1000:Node,,,:/home/node:/bin/zsh
nodeadmin:x:1000:0::/:/bin/sh
+nis:x:1001:1001::/:/bin/sh
bad:x:10x:1::/:/bin/sh
short:x:1002:1002
nohome:x:1003:1003:::
`, `root:x:0:
shadow:x:42:nodeadmin
tty:x:5:
audio:x:29:node,other
video:x:44:other,node
node:x:1000:node
`)

// TestByUIDIsTheFirstEntry: a second entry for a uid, with gid 0 and the
// shadow group, gives the uid neither: its own account is its first entry
// (getpwuid's), with that entry's groups.
func TestByUIDIsTheFirstEntry(t *testing.T) {
	a, err := image.ByUID(1000)
	if err != nil {
		t.Fatal(err)
	}
	want := &Account{Name: "node", UID: 1000, GID: 1000, Groups: []uint32{1000, 29, 44}, Home: "/home/node", Shell: "/bin/zsh"}
	if !reflect.DeepEqual(a, want) {
		t.Fatalf("ByUID(1000) = %+v, want %+v", a, want)
	}
	// Named, the second entry is what it says: a caller that must not
	// hand it out compares it with ByUID's.
	b, err := image.Lookup("nodeadmin")
	if err != nil || b.UID != 1000 || b.GID != 0 || !reflect.DeepEqual(b.Groups, []uint32{0, 42}) {
		t.Fatalf("Lookup(nodeadmin) = %+v, %v", b, err)
	}
}

func TestLookup(t *testing.T) {
	for _, c := range []struct {
		spec string
		want *Account
	}{
		{"node", &Account{Name: "node", UID: 1000, GID: 1000, Groups: []uint32{1000, 29, 44}, Home: "/home/node", Shell: "/bin/zsh"}},
		{"1000", &Account{Name: "node", UID: 1000, GID: 1000, Groups: []uint32{1000, 29, 44}, Home: "/home/node", Shell: "/bin/zsh"}},
		{"0", &Account{Name: "root", UID: 0, GID: 0, Groups: []uint32{0}, Home: "/root", Shell: "/bin/bash"}},
		{"nohome", &Account{Name: "nohome", UID: 1003, GID: 1003, Groups: []uint32{1003}, Home: "/", Shell: "/bin/sh"}},
		// No entry for a uid: as docker and kubernetes run it.
		{"54321", &Account{Name: "54321", UID: 54321, GID: 54321, Groups: []uint32{54321}, Home: "/", Shell: "/bin/sh"}},
		// Skipped entries: a NIS marker, a bad uid, too few fields.
		{"1001", &Account{Name: "1001", UID: 1001, GID: 1001, Groups: []uint32{1001}, Home: "/", Shell: "/bin/sh"}},
	} {
		got, err := image.Lookup(c.spec)
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("Lookup(%q) = %+v, %v; want %+v", c.spec, got, err, c.want)
		}
	}
	for _, spec := range []string{"", "nobody", "+nis", "bad", "short", "4294967296"} {
		if a, err := image.Lookup(spec); !errors.Is(err, ErrUnknown) {
			t.Errorf("Lookup(%q) = %+v, %v; want ErrUnknown", spec, a, err)
		} else if spec != "" && !strings.Contains(err.Error(), `"`+spec+`"`) {
			t.Errorf("Lookup(%q): %v does not name it", spec, err)
		}
	}
}

func TestNoFiles(t *testing.T) {
	none := Files{FS: fstest.MapFS{}}
	if _, err := none.Lookup("root"); !errors.Is(err, ErrUnknown) {
		t.Errorf("Lookup(root) with no /etc/passwd: %v", err)
	}
	if a, err := none.Lookup("0"); err != nil || a.UID != 0 || a.Home != "/" {
		t.Errorf("Lookup(0) with no /etc/passwd: %+v, %v", a, err)
	}
}

func TestGroupID(t *testing.T) {
	if gid, ok := image.groupID("tty"); !ok || gid != 5 {
		t.Errorf("groupID(tty) = %d, %v", gid, ok)
	}
	if _, ok := image.groupID("wheel"); ok {
		t.Error("groupID(wheel) found a group that is not there")
	}
}

// TestLongGroupLine: a group with thousands of members is one long line.
func TestLongGroupLine(t *testing.T) {
	members := strings.Repeat("someone,", 20000) + "node"
	f := files("node:x:1000:1000::/:/bin/sh\n", "big:x:7:"+members+"\n")
	a, err := f.Lookup("node")
	if err != nil || !reflect.DeepEqual(a.Groups, []uint32{1000, 7}) {
		t.Fatalf("Lookup(node) = %+v, %v", a, err)
	}
}

// TestSystemAgreesWithOSUser: on this machine's files, every entry reads
// as Go's os/user (the same files parser, without cgo) reads it.
func TestSystemAgreesWithOSUser(t *testing.T) {
	n := 0
	System.eachLine("etc/passwd", func(fields []string) bool {
		if len(fields) < 7 {
			return false
		}
		n++
		a, err := System.Lookup(fields[0])
		u, uerr := user.Lookup(fields[0])
		if err != nil || uerr != nil {
			return false // gone meanwhile: other tests make and remove users
		}
		ids, _ := u.GroupIds()
		var groups []string
		for _, g := range a.Groups {
			groups = append(groups, strconv.FormatUint(uint64(g), 10))
		}
		got := fmt.Sprintf("%s %d %d %s %v", a.Name, a.UID, a.GID, a.Home, groups)
		if want := fmt.Sprintf("%s %s %s %s %v", u.Username, u.Uid, u.Gid, u.HomeDir, ids); got != want {
			t.Errorf("%s: %s; os/user: %s", fields[0], got, want)
		}
		return false
	})
	if n == 0 {
		t.Skip("no /etc/passwd here")
	}
}

// TestOverLongLineSkipped: a line longer than maxLine is skipped, as
// os/user skips it; the entries after it still count.
func TestOverLongLineSkipped(t *testing.T) {
	long := "big:x:7:" + strings.Repeat("someone,", maxLine/8) + "node\n"
	f := files("junk:"+strings.Repeat("x", maxLine)+"\nnode:x:1000:1000::/:/bin/sh\n",
		long+"small:x:8:node\n")
	a, err := f.Lookup("node")
	if err != nil || a.UID != 1000 || !reflect.DeepEqual(a.Groups, []uint32{1000, 8}) {
		t.Fatalf("Lookup(node) after over-long lines = %+v, %v; want uid 1000, groups [1000 8]", a, err)
	}
	if gid, ok := f.groupID("small"); !ok || gid != 8 {
		t.Errorf("groupID(small) after an over-long line = %d, %v", gid, ok)
	}
}
