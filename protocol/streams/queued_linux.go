package streams

import "golang.org/x/sys/unix"

// queuedBytes is how many bytes socket fd has received and not yet
// given to a read: 0 when it cannot tell.
func queuedBytes(fd int) int {
	n, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
	if err != nil {
		return 0
	}
	return n
}
