package agent

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/ttymodes"
)

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
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// The command name may hold spaces and parentheses: the fields
		// after the last ')' are state, ppid, pgrp, session.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) > 3 && f[3] == strconv.Itoa(sid) && f[0] != "Z" {
			pids = append(pids, pid)
		}
	}
	return pids
}

// openPTY opens a PTY pair whose master supports deadlines and Close
// unblocking a pending Read. pty.Open leaves the master in blocking mode (it
// calls Fd), so the master is duplicated into a non-blocking descriptor that
// os.NewFile registers with the poller.
func openPTY() (master, slave *os.File, err error) {
	m, s, err := pty.Open()
	if err != nil {
		return nil, nil, err
	}
	defer m.Close()
	fd, err := unix.FcntlInt(m.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		s.Close()
		return nil, nil, err
	}
	return os.NewFile(uintptr(fd), m.Name()), s, nil
}

// control runs fn on f's descriptor without switching it to blocking mode,
// as f.Fd would.
func control(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// setSize applies s to the PTY with TIOCSWINSZ; the kernel sends SIGWINCH
// to the terminal's foreground process group when the size changes.
func setSize(master *os.File, s protocol.WindowSize) error {
	return control(master, func(fd int) error {
		return unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: s.Rows, Col: s.Cols, Xpixel: s.XPixel, Ypixel: s.YPixel})
	})
}

// setModes applies the host terminal's modes to the PTY before the program
// starts, as sshd applies those of a pty-req.
func setModes(slave *os.File, modes map[string]uint32) error {
	return control(slave, func(fd int) error {
		t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
		if err != nil {
			return err
		}
		ttymodes.Apply(t, modes)
		return unix.IoctlSetTermios(fd, unix.TCSETS, t)
	})
}

// eofBytes returns what types end-of-file on the terminal: its VEOF
// character, twice when a partial line is pending in canonical mode (the
// first one only ends the line). Without ICANON it is one plain byte.
func eofBytes(master *os.File, atLineStart bool) []byte {
	veof, canonical := byte(4), true
	control(master, func(fd int) error {
		t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
		if err == nil {
			veof, canonical = t.Cc[unix.VEOF], t.Lflag&unix.ICANON != 0
		}
		return err
	})
	if canonical && !atLineStart {
		return []byte{veof, veof}
	}
	return []byte{veof}
}
