package agent

import (
	"os"
	"slices"
	"strings"

	"github.com/corkvm/cork/guest/account"
	"github.com/corkvm/cork/protocol"
)

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
