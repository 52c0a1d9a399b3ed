package copytree

import "golang.org/x/sys/unix"

// fsUID is the uid the calling thread's file operations run as: the
// agent gives a copy's thread the user's with setfsuid(2).
func fsUID() uint32 {
	uid, _ := unix.SetfsuidRetUid(-1) // -1 changes nothing and returns the current one
	return uint32(uid)
}
