package term

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Token names the terminal fd is, for the agent: the same for one
// terminal's life, different for another terminal or a later one on the
// same device. A PTY's device number is reused once it is closed, but its
// inode's change time is set when the PTY is opened and not by reads and
// writes. It is hashed with the host's name, so that it says nothing
// about the host. The empty string when fd is no terminal.
func Token(fd int) string {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR {
		return ""
	}
	host, _ := os.Hostname()
	sec, nsec := st.Ctim.Unix()
	sum := sha256.Sum256(fmt.Appendf(nil, "cork terminal\x00%s\x00%d\x00%d.%d", host, st.Rdev, sec, nsec))
	return hex.EncodeToString(sum[:16])
}
