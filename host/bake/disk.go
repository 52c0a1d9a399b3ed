package bake

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// diskBudget bounds the bytes a bake writes to disk, its output and its
// spool files together: a gzip'd input of a few megabytes can expand to
// whatever its layers claim, and a bake in CI shares a small disk.
type diskBudget struct {
	max  int64
	used int64
	why  string // what set max, for messages
}

// newDiskBudget bounds a bake's writes to max bytes, or, for max 0, to the
// space free on dir's file system, less a reserve of a twentieth of it (at
// most 1 GiB) left to everything else.
func newDiskBudget(max int64, dir string) *diskBudget {
	if max > 0 {
		return &diskBudget{max: max, why: "--max-output"}
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return &diskBudget{max: 1 << 62, why: "no bound"}
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	return &diskBudget{max: free - min(free/20, 1<<30), why: "the space free on " + dir + " less a reserve; --max-output sets another bound"}
}

// take admits n more bytes of name.
func (d *diskBudget) take(n int64, name string) error {
	if d == nil {
		return nil
	}
	if n > d.max-d.used {
		return fmt.Errorf("%s (%d bytes) would take what the bake writes past %d MiB (%s)", shortName(name), n, d.max>>20, d.why)
	}
	d.used += n
	return nil
}
