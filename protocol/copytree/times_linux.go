package copytree

import (
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// futimens sets the access and modification times of the file open as
// fd: utimensat(2) with no path is futimens(3), which x/sys does not have.
func futimens(fd int, t time.Time) error {
	ts := [2]unix.Timespec{unix.NsecToTimespec(t.UnixNano()), unix.NsecToTimespec(t.UnixNano())}
	_, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}
