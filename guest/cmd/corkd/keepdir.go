package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// The keeper's directory holds its socket, lock, log and pid file. Whoever
// controls that directory can listen in the keeper's place (and receive
// every Exec and keystroke), swap its socket, hold its lock, or plant
// symbolic links that the relay would write through. So it must be the
// user's own, mode 0700, in a parent where no one else can rename it, and
// every file in it is opened without following a symbolic link.

// defaultKeepSocket is where the keeper listens: under /run for root;
// otherwise (newer smolvm runs exec as the image's user) in the user's
// runtime directory, /run/user/UID, when it exists and is the user's own,
// else in a directory of the user's own under /tmp.
func defaultKeepSocket() string {
	if s := os.Getenv("CORKD_KEEP_SOCKET"); s != "" {
		return s
	}
	return keepSocketFor(os.Geteuid(), "/run/user")
}

func keepSocketFor(uid int, runUser string) string {
	return keepSocketsFor(uid, runUser)[0]
}

// keepSocketsFor returns every default place of uid's keeper, the one a
// new keeper takes first: a keeper started while /run/user/UID did not
// exist listens under /tmp for its life, and relays must still find it.
func keepSocketsFor(uid int, runUser string) []string {
	if uid == 0 {
		return []string{"/run/corkd/kept.sock"}
	}
	run := filepath.Join(runUser, strconv.Itoa(uid), "corkd", "kept.sock")
	tmp := fmt.Sprintf("/tmp/corkd-%d/kept.sock", uid)
	if checkPrivateDir(filepath.Dir(filepath.Dir(run)), uid) == nil {
		return []string{run, tmp}
	}
	return []string{tmp, run}
}

// ensurePrivateDir makes dir, mode 0700, unless it exists, and checks that
// it is uid's own and private: a directory someone else made first (in
// /tmp anyone can) is refused, never used.
func ensurePrivateDir(dir string, uid int) error {
	if err := checkParent(filepath.Dir(dir), uid); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("keeper directory: %w", err)
	}
	return checkPrivateDir(dir, uid)
}

// checkPrivateDir reports why dir, not followed if it is a symbolic link,
// is not a directory owned by uid that only its owner may enter.
func checkPrivateDir(dir string, uid int) error {
	st, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("keeper directory: %w", err)
	}
	owner := int(st.Sys().(*syscall.Stat_t).Uid)
	switch {
	case st.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("keeper directory %s is a symbolic link of %s, not a directory of uid %d's own: remove it, or give --keep-socket a path in a directory of your own",
			dir, describeUID(owner), uid)
	case !st.IsDir():
		return fmt.Errorf("keeper directory %s is a file of %s, not a directory: remove it, or give --keep-socket another path", dir, describeUID(owner))
	case owner != uid:
		return fmt.Errorf("keeper directory %s belongs to %s, not to uid %d: another user may have made it to receive your sessions; "+
			"remove it (as root), or give --keep-socket a path in a directory of your own", dir, describeUID(owner), uid)
	case st.Mode().Perm()&0o077 != 0:
		return fmt.Errorf("keeper directory %s has mode %04o, so others may enter it: it must be 0700 (check what is in it, then chmod 700 %s)", dir, st.Mode().Perm(), dir)
	}
	return nil
}

// checkParent reports why dir, the parent of the keeper's directory, would
// let another user rename that directory away and put their own in its
// place: it must be uid's or root's, and writable by others only with the
// sticky bit (as /tmp is).
func checkParent(dir string, uid int) error {
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("keeper directory's parent: %w", err)
	}
	owner := int(st.Sys().(*syscall.Stat_t).Uid)
	if owner != uid && owner != 0 {
		return fmt.Errorf("keeper directory's parent %s belongs to %s: give --keep-socket a path in a directory of your own", dir, describeUID(owner))
	}
	if st.Mode().Perm()&0o022 != 0 && st.Mode()&fs.ModeSticky == 0 {
		return fmt.Errorf("keeper directory's parent %s is writable by others and not sticky: give --keep-socket a path in a directory of your own", dir)
	}
	return nil
}

// describeUID names a uid with its login name when it has one.
func describeUID(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return fmt.Sprintf("uid %d (%s)", uid, u.Username)
	}
	return fmt.Sprintf("uid %d", uid)
}

// openPrivate opens a file in the keeper's directory, never through a
// symbolic link, and says so when one is there.
func openPrivate(path string, flag int, perm fs.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, flag|syscall.O_NOFOLLOW, perm)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("%s is a symbolic link: corkd does not follow links in its own files; remove it", path)
	}
	return f, err
}

// writePidFile writes corkd's pid to path, never through a symbolic link.
func writePidFile(path string) error {
	f, err := openPrivate(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, "%d\n", os.Getpid())
	if err2 := f.Close(); err == nil {
		err = err2
	}
	return err
}

// removePidFile removes path if it still holds corkd's pid: a keeper that
// retired shares the path with the keeper that took its place.
func removePidFile(path string) {
	f, err := openPrivate(path, os.O_RDONLY, 0)
	if err != nil {
		return
	}
	b := make([]byte, 32)
	n, _ := f.Read(b)
	f.Close()
	if strings.TrimSpace(string(b[:n])) == strconv.Itoa(os.Getpid()) {
		os.Remove(path)
	}
}
