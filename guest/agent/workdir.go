package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"

	"github.com/corkvm/cork/guest/account"
	"github.com/corkvm/cork/protocol"
)

// The session's working directory, and the permission checks made for the
// session's user by the permission bits, before anything runs as the user.

// workdir returns the session's working directory: the requested one, or
// the user's home when the user can enter it, else /. The check is made
// here because a chdir failing in the child is reported by exec as if the
// program could not be executed.
func workdir(dir string, acct *account.Account) (string, *protocol.Error) {
	if dir == "" {
		if st, err := os.Stat(acct.Home); err == nil && st.IsDir() && canEnter(acct, acct.Home) {
			return acct.Home, nil
		}
		return "/", nil
	}
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", &protocol.Error{Kind: protocol.KindWorkdir, Message: fmt.Sprintf("working directory %q does not exist", dir)}
	case err != nil:
		return "", &protocol.Error{Kind: protocol.KindWorkdir, Message: fmt.Sprintf("working directory %q: %v", dir, err)}
	case !st.IsDir():
		return "", &protocol.Error{Kind: protocol.KindWorkdir, Message: fmt.Sprintf("working directory %q is not a directory", dir)}
	case !canEnter(acct, dir):
		return "", &protocol.Error{Kind: protocol.KindWorkdir, Message: fmt.Sprintf("user %s cannot enter working directory %q: permission denied", acct.Name, dir)}
	}
	return dir, nil
}

// canEnter reports whether acct may search dir and every directory above
// it, by their permission bits.
func canEnter(acct *account.Account, dir string) bool {
	return reachable(acct, dir) == nil
}

// reachable reports EACCES when acct may not search one of the directories
// that lead to p (p itself included when it is a directory), as path
// resolution in the kernel would for that user; nil otherwise, whether p
// exists or not.
func reachable(acct *account.Account, p string) error {
	if acct.UID == 0 {
		return nil
	}
	p, err := filepath.Abs(p)
	if err != nil {
		return err
	}
	var dirs []string
	if st, err := os.Stat(p); err == nil && st.IsDir() {
		dirs = append(dirs, p)
	}
	for d := filepath.Dir(p); ; d = filepath.Dir(d) {
		dirs = append(dirs, d)
		if d == "/" {
			break
		}
	}
	for _, d := range dirs {
		st, err := os.Stat(d)
		if err != nil {
			return nil // missing: the lookup that follows says so
		}
		if !permits(acct, st, 0o1) {
			return syscall.EACCES
		}
	}
	return nil
}

// permits reports whether acct has permission want (0o4 read, 0o2 write,
// 0o1 execute or search) on a file, by its permission bits: the owner's
// when acct owns it, else the group's when acct is in its group, else the
// others' (the kernel's order; ACLs are not read, and execve as the user
// has the final word). Root may do anything, but execute only a file with
// some execute bit.
func permits(acct *account.Account, st fs.FileInfo, want fs.FileMode) bool {
	mode := st.Mode().Perm()
	if acct.UID == 0 {
		return want != 0o1 || st.IsDir() || mode&0o111 != 0
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return false
	}
	switch {
	case sys.Uid == acct.UID:
		return mode>>6&want == want
	case slices.Contains(acct.Groups, sys.Gid):
		return mode>>3&want == want
	}
	return mode&want == want
}
