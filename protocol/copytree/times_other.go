//go:build !linux

package copytree

import (
	"time"

	"golang.org/x/sys/unix"
)

// futimens sets the access and modification times of the file open as fd.
func futimens(fd int, t time.Time) error {
	tv := unix.NsecToTimeval(t.UnixNano())
	return unix.Futimes(fd, []unix.Timeval{tv, tv})
}
