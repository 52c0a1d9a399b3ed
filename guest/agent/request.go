package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/corkvm/cork/guest/account"
	"github.com/corkvm/cork/protocol"
)

// Resolving an exec request into what the program runs as, where, and with
// which environment, and reporting a program that cannot be run.

// account resolves the session's user: the one named, or corkd's own. A
// peer confined to its own uid gets only that; a corkd that is not root can
// serve only itself.
func (s *Server) account(user string, peer Peer) (*account.Account, *protocol.Error) {
	if !peer.AsAny {
		acct, perr := confinedAccount(user, peer)
		if perr != nil {
			return nil, perr
		}
		return s.canServe(acct, user)
	}
	if user == "" {
		if s.self == nil {
			return nil, &protocol.Error{Kind: protocol.KindUser, Message: "corkd cannot resolve its own user; name one"}
		}
		return s.self, nil
	}
	acct, err := account.Lookup(user)
	if err != nil {
		return nil, &protocol.Error{Kind: protocol.KindUser, Message: err.Error()}
	}
	return s.canServe(acct, user)
}

// canServe checks that corkd can run a session as acct: as root it can
// switch to anyone, otherwise it serves only its own uid.
func (s *Server) canServe(acct *account.Account, user string) (*account.Account, *protocol.Error) {
	if user == "" {
		user = acct.Name
	}
	if euid := os.Geteuid(); acct.UID != uint32(euid) && euid != 0 {
		self := fmt.Sprint(euid)
		if s.self != nil {
			self = fmt.Sprintf("%d (%s)", euid, s.self.Name)
		}
		return nil, &protocol.Error{Kind: protocol.KindUser, Message: fmt.Sprintf(
			"corkd runs as uid %s, not root, so it cannot switch to user %q; run corkd as root or omit the user", self, user)}
	}
	return acct, nil
}

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
// file, is the answer only when no entry holds one it can execute. The search is made with acct's permissions, not
// corkd's: root finds files in directories the user cannot enter.
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

// environ builds the program's environment: corkd's own (the image's, when
// smolvm starts it) without the variables that describe corkd's process
// rather than the image, then the user's HOME, USER, LOGNAME and SHELL,
// PWD (the session's working directory), TERM for a PTY, then the
// request's entries, later entries winning.
func (s *Server) environ(req *protocol.Exec, acct *account.Account, dir string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); !slices.Contains(agentOnlyEnv, k) {
			env = append(env, kv)
		}
	}
	env = append(env, "HOME="+acct.Home, "USER="+acct.Name, "LOGNAME="+acct.Name, "SHELL="+acct.Shell, "PWD="+dir)
	if req.TTY {
		term := req.Term
		if term == "" {
			term = s.cfg.DefaultTerm
		}
		env = append(env, "TERM="+term)
	}
	env = append(env, req.Env...)
	env = dedupEnv(env)
	if lookupEnv(env, "PATH") == "" {
		env = append(env, "PATH="+DefaultPath)
	}
	return env
}

// agentOnlyEnv are variables of corkd's own process that a session must not
// inherit: the bookkeeping of the shell that started corkd (its directory,
// nesting level, last command), which programs trust, and the service
// manager's handles meant for corkd alone (systemd's sd_notify socket,
// socket activation, journal stream and watchdog).
var agentOnlyEnv = []string{
	"PWD", "OLDPWD", "SHLVL", "_",
	"NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES",
	"INVOCATION_ID", "JOURNAL_STREAM", "WATCHDOG_PID", "WATCHDOG_USEC",
}

// dedupEnv keeps the last value of each key, in the order keys first appear.
func dedupEnv(env []string) []string {
	idx := make(map[string]int, len(env))
	out := env[:0:0]
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := idx[k]; ok {
			out[i] = kv
			continue
		}
		idx[k] = len(out)
		out = append(out, kv)
	}
	return out
}

func lookupEnv(env []string, key string) string {
	for _, kv := range env {
		if k, v, _ := strings.Cut(kv, "="); k == key {
			return v
		}
	}
	return ""
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
