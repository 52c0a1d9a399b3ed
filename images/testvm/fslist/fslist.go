// Package fslist reads a list of filesystem entries in the format of the
// kernel's gen_init_cpio, shared by the test VM's image and initramfs
// builders:
//
//	dir   NAME MODE UID GID
//	file  NAME LOCATION MODE UID GID
//	slink NAME TARGET MODE UID GID
//	nod   NAME MODE UID GID c|b MAJOR MINOR
//
// Modes are octal. Blank lines and lines starting with # are skipped.
package fslist

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// Entry is one file, directory, symlink or device node.
type Entry struct {
	Kind         string // "dir", "file", "slink" or "nod"
	Name         string // absolute, as listed
	Mode         uint32 // permission bits
	UID, GID     uint32
	Data         []byte // file contents
	Target       string // symlink target
	Block        bool   // nod: block device, else character
	Major, Minor uint32
}

var fields = map[string]int{"dir": 5, "file": 6, "slink": 6, "nod": 8}

// Parse reads a list, loading each file's contents from its location.
func Parse(r io.Reader) ([]Entry, error) {
	var out []Entry
	s := bufio.NewScanner(r)
	for line := 1; s.Scan(); line++ {
		text := strings.TrimSpace(s.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		e, err := parseLine(strings.Fields(text))
		if err != nil {
			return nil, fmt.Errorf("line %d (%q): %v", line, text, err)
		}
		out = append(out, e)
	}
	return out, s.Err()
}

func parseLine(f []string) (Entry, error) {
	n, ok := fields[f[0]]
	if !ok {
		return Entry{}, fmt.Errorf("unknown entry type %q", f[0])
	}
	if len(f) != n {
		return Entry{}, fmt.Errorf("%s takes %d fields, got %d", f[0], n-1, len(f)-1)
	}
	e := Entry{Kind: f[0], Name: f[1]}
	i := 2
	switch e.Kind {
	case "file":
		data, err := os.ReadFile(f[2])
		if err != nil {
			return e, err
		}
		e.Data, i = data, 3
	case "slink":
		e.Target, i = f[2], 3
	}
	var err error
	if e.Mode, err = num(f[i], 8); err != nil {
		return e, err
	}
	if e.UID, err = num(f[i+1], 10); err != nil {
		return e, err
	}
	if e.GID, err = num(f[i+2], 10); err != nil {
		return e, err
	}
	if e.Kind == "nod" {
		e.Block = f[5] == "b"
		if e.Major, err = num(f[6], 10); err != nil {
			return e, err
		}
		if e.Minor, err = num(f[7], 10); err != nil {
			return e, err
		}
	}
	return e, nil
}

func num(s string, base int) (uint32, error) {
	n, err := strconv.ParseUint(s, base, 32)
	return uint32(n), err
}
