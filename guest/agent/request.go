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
	if acct.UID == 0 {
		return true
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	for p := dir; ; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if err != nil {
			return false
		}
		sys, ok := st.Sys().(*syscall.Stat_t)
		if !ok {
			return false
		}
		mode := st.Mode().Perm()
		var bit fs.FileMode = 0o001
		if sys.Uid == acct.UID {
			bit = 0o100
		} else if slices.Contains(acct.Groups, sys.Gid) {
			bit = 0o010
		}
		if mode&bit == 0 {
			return false
		}
		if p == "/" {
			return true
		}
	}
}

// environ builds the program's environment: corkd's own (the image's, when
// smolvm starts it), then the user's HOME, USER, LOGNAME and SHELL, TERM for
// a PTY, then the request's entries, later entries winning.
func (s *Server) environ(req *protocol.Exec, acct *account.Account) []string {
	var env []string
	env = append(env, os.Environ()...)
	env = append(env, "HOME="+acct.Home, "USER="+acct.Name, "LOGNAME="+acct.Name, "SHELL="+acct.Shell)
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

// execFailureCode maps a start error to a shell's status: 126 for a program
// that cannot be executed, 127 for one that is not there; 0 for anything
// else.
func execFailureCode(err error) int {
	switch {
	case errors.Is(err, syscall.ENOENT):
		return 127
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.ENOEXEC), errors.Is(err, syscall.EISDIR):
		return 126
	}
	return 0
}

// reportExecFailure tells the host, as a shell would, that the program
// could not run: a message on the session's error output and exit 126/127.
func (s *Server) reportExecFailure(w *protocol.Writer, req *protocol.Exec, code int, err error) {
	if pe, ok := err.(*fs.PathError); ok {
		err = pe.Err
	}
	msg := fmt.Sprintf("corkd: %s: %v\n", req.Argv[0], err)
	t := protocol.TypeStderr
	if req.TTY {
		t, msg = protocol.TypeStdout, strings.ReplaceAll(msg, "\n", "\r\n")
	}
	s.log.Info("cannot execute", "argv0", req.Argv[0], "code", code, "err", err)
	w.WriteFrame(t, []byte(msg))
	w.WriteJSON(protocol.TypeExit, &protocol.Exit{Code: code})
}
