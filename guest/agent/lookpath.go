package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/corkvm/cork/guest/account"
	"github.com/corkvm/cork/protocol"
)

// Finding the program as the session's user would, and reporting one that
// cannot be run as a shell does (126, 127).

// execFailure is a program that cannot be run, reported as a shell does: a
// message naming the file tried, and status 127 (not found) or 126 (found
// but not executable).
type execFailure struct {
	code int
	path string // the file tried; "" when PATH held no candidate
	err  error
}

// lookPath finds file for acct as execvp does: a name with a slash is
// taken as it is, relative to the session's working directory dir; a bare
// name is searched in path, skipping directories acct cannot search
// (bash's search skips them too: the user cannot see what they hold) and
// files acct cannot execute; "permission denied", naming the first such
// file, is the answer only when no entry holds one it can execute. The
// search is made with acct's permissions, not corkd's: root finds files in
// directories the user cannot enter.
func lookPath(file, path, dir string, acct *account.Account) (string, *execFailure) {
	abs := func(p string) string {
		if filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	if strings.Contains(file, "/") {
		p := abs(file)
		if err := executable(acct, p); err != nil {
			return "", &execFailure{code: codeOf(err), path: file, err: err}
		}
		return p, nil
	}
	var denied string
	for _, d := range filepath.SplitList(path) {
		if d == "" {
			d = "."
		}
		p := abs(filepath.Join(d, file))
		if reachable(acct, p) != nil {
			continue // to the user, nothing is there (as a shell's search sees it)
		}
		switch err := executable(acct, p); {
		case err == nil:
			return p, nil
		case errors.Is(err, syscall.EACCES) && denied == "":
			denied = p
		}
	}
	if denied != "" {
		return "", &execFailure{code: 126, path: denied, err: syscall.EACCES}
	}
	return "", &execFailure{code: 127, err: fmt.Errorf("command not found in PATH %s", path)}
}

// executable reports why acct could not execute p: ENOENT, or EACCES for a
// file it may not reach or execute, or a directory.
func executable(acct *account.Account, p string) error {
	if err := reachable(acct, p); err != nil {
		return err
	}
	st, err := os.Stat(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return syscall.ENOENT
		}
		return syscall.EACCES
	}
	if st.IsDir() || !st.Mode().IsRegular() || !permits(acct, st, 0o1) {
		return syscall.EACCES
	}
	return nil
}

func codeOf(err error) int {
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOTDIR) {
		return 127
	}
	return 126
}

// startFailure returns the execFailure for an error starting the program
// at path, or nil when the error is not one a shell reports as 126/127.
func startFailure(path string, err error) *execFailure {
	switch {
	case errors.Is(err, syscall.ENOENT):
		return &execFailure{code: 127, path: path, err: syscall.ENOENT}
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.ENOEXEC), errors.Is(err, syscall.EISDIR):
		return &execFailure{code: 126, path: path, err: err}
	}
	return nil
}

// reportExecFailure tells the host, as a shell would, that the program
// could not run: a message naming the file tried on the session's error
// output, and exit 126 or 127.
func (s *Server) reportExecFailure(w *protocol.Writer, req *protocol.Exec, f *execFailure) {
	err := f.err
	if pe, ok := err.(*fs.PathError); ok {
		err = pe.Err
	}
	msg := fmt.Sprintf("corkd: %s: %v\n", req.Argv[0], err)
	if f.path != "" && f.path != req.Argv[0] {
		msg = fmt.Sprintf("corkd: %s: %s: %v\n", req.Argv[0], f.path, err)
	}
	t := protocol.TypeStderr
	if req.TTY {
		t, msg = protocol.TypeStdout, strings.ReplaceAll(msg, "\n", "\r\n")
	}
	s.log.Info("cannot execute", "argv0", req.Argv[0], "code", f.code, "err", err)
	w.WriteFrame(t, []byte(msg))
	w.WriteJSON(protocol.TypeExit, &protocol.Exit{Code: f.code})
}
