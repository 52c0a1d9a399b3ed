package agent

import (
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corkvm/cork/guest/procfs"
	"github.com/corkvm/cork/protocol"
)

// The session's processes: signals forwarded to them, the hang-up when the
// host has gone, and the exit status as a shell reports it.

// signalNumber maps a protocol signal name to its number here, or reports
// false for a name that is not forwarded.
func signalNumber(name string) (syscall.Signal, bool) {
	name = strings.TrimPrefix(strings.ToUpper(name), "SIG")
	for _, allowed := range protocol.Signals {
		if name == allowed {
			return unix.SignalNum("SIG" + name), true
		}
	}
	return 0, false
}

// exitOf turns a wait status into an Exit frame: 128+N for a program
// killed by signal N (ProcessState.ExitCode is -1 there).
func exitOf(ws syscall.WaitStatus) protocol.Exit {
	if ws.Signaled() {
		sig := ws.Signal()
		return protocol.Exit{
			Code:       128 + int(sig),
			Signal:     strings.TrimPrefix(unix.SignalName(sig), "SIG"),
			CoreDumped: ws.CoreDump(),
		}
	}
	return protocol.Exit{Code: ws.ExitStatus()}
}

// signalSession sends sig to every process of session sid: the leader's
// process group, and any process a job-control shell moved to a group of its
// own. Processes that have left the session (daemons) are not followed.
// It returns how many processes it signalled.
func signalSession(sid int, sig syscall.Signal) int {
	n := 0
	if unix.Kill(-sid, sig) == nil {
		n++
	}
	for _, pid := range sessionMembers(sid) {
		if unix.Kill(pid, sig) == nil {
			n++
		}
	}
	return n
}

// sessionMembers lists the live processes whose session id is sid; a
// zombie needs no signal, only its parent's wait.
func sessionMembers(sid int) []int {
	pids, _ := procfs.Pids()
	var members []int
	for _, pid := range pids {
		if st, err := procfs.ReadStat(pid); err == nil && st.Session == sid && st.State != "Z" {
			members = append(members, pid)
		}
	}
	return members
}

// signal forwards an allowed signal to the program's process group.
func (ss *session) signal(name string) {
	sig, ok := signalNumber(name)
	if !ok {
		ss.log.Warn("signal not forwarded", "signal", name)
		return
	}
	// ESRCH: the program has already gone, which is no error.
	if err := syscall.Kill(-ss.cmd.Process.Pid, sig); err != nil && err != syscall.ESRCH {
		ss.log.Warn("signal failed", "signal", name, "err", err)
	}
}

// hangup ends a session whose host has gone: SIGHUP to its processes, then
// SIGKILL to whatever is left after the grace period.
func (ss *session) hangup() {
	sid := ss.cmd.Process.Pid
	signalSession(sid, syscall.SIGHUP)
	select {
	case <-ss.reaped:
	case <-time.After(ss.srv.cfg.DisconnectGrace):
	}
	signalSession(sid, syscall.SIGKILL)
}
