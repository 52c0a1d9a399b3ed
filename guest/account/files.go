package account

import (
	"bufio"
	"io/fs"
	"slices"
	"strconv"
	"strings"
)

// Files is where accounts are read from: etc/passwd and etc/group in FS,
// parsed as glibc's files backend parses them (and Go's os/user without
// cgo): blank lines and # comments skipped, as are entries whose name
// starts with + or - (NIS compat markers) or whose ids are not numbers;
// the first matching entry wins.
type Files struct {
	FS fs.FS
}

type passwdEntry struct {
	name        string
	uid, gid    uint32
	home, shell string
}

// maxLine bounds a line of /etc/passwd or /etc/group; a group with many
// members makes a long one. A longer line is skipped, as os/user skips
// it, and the entries after it still read.
const maxLine = 1 << 20

// eachLine calls fn with the colon-separated fields of each entry of the
// file at name, until fn returns true. A file that cannot be read has no
// entries.
func (f Files) eachLine(name string, fn func(fields []string) bool) {
	r, err := f.FS.Open(name)
	if err != nil {
		return
	}
	defer r.Close()
	br := bufio.NewReader(r)
	for {
		b, err := readLine(br)
		line := strings.TrimSpace(string(b))
		if line != "" && line[0] != '#' && line[0] != '+' && line[0] != '-' && fn(strings.Split(line, ":")) {
			return
		}
		if err != nil {
			return
		}
	}
}

// readLine returns the next line of r, or nothing for a line longer than
// maxLine, which is read to its end but not kept; err is r's error (io.EOF
// at its end), with the last line, if any, before it.
func readLine(r *bufio.Reader) ([]byte, error) {
	var line []byte
	tooLong := false
	for {
		part, err := r.ReadSlice('\n')
		if !tooLong && len(line)+len(part) > maxLine+1 { // +1: the newline
			tooLong, line = true, nil
		}
		if !tooLong {
			line = append(line, part...)
		}
		if err != bufio.ErrBufferFull {
			return line, err
		}
	}
}

// findUser returns the first passwd entry that match accepts, or nil.
func (f Files) findUser(match func(*passwdEntry) bool) *passwdEntry {
	var found *passwdEntry
	f.eachLine("etc/passwd", func(fields []string) bool {
		if len(fields) < 7 || fields[0] == "" {
			return false
		}
		uid, err1 := strconv.ParseUint(fields[2], 10, 32)
		gid, err2 := strconv.ParseUint(fields[3], 10, 32)
		if err1 != nil || err2 != nil {
			return false
		}
		e := &passwdEntry{name: fields[0], uid: uint32(uid), gid: uint32(gid), home: fields[5], shell: fields[6]}
		if match(e) {
			found = e
		}
		return found != nil
	})
	return found
}

// groupsOf returns primary, then the gid of each group that lists name
// among its members, each once.
func (f Files) groupsOf(name string, primary uint32) []uint32 {
	groups := []uint32{primary}
	f.eachLine("etc/group", func(fields []string) bool {
		if len(fields) != 4 || fields[0] == "" || !slices.Contains(strings.Split(fields[3], ","), name) {
			return false
		}
		if gid, err := strconv.ParseUint(fields[2], 10, 32); err == nil && !slices.Contains(groups, uint32(gid)) {
			groups = append(groups, uint32(gid))
		}
		return false
	})
	return groups
}

// groupID returns the gid of the first group called name.
func (f Files) groupID(name string) (gid uint32, ok bool) {
	f.eachLine("etc/group", func(fields []string) bool {
		if len(fields) < 3 || fields[0] != name {
			return false
		}
		n, err := strconv.ParseUint(fields[2], 10, 32)
		gid, ok = uint32(n), err == nil
		return ok
	})
	return gid, ok
}
