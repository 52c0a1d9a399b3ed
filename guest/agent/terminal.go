package agent

import (
	"context"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/corkvm/cork/guest/account"
	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/ttymodes"
)

// The session's terminal: a PTY opened, sized and set to the host
// terminal's modes before the program starts, resized with TIOCSWINSZ on
// its master, and sent end-of-file as its VEOF character.

// fallbackSize is the PTY size when the host has no terminal to measure
// (cork -t with stdin redirected): a PTY is never created at 0x0.
var fallbackSize = protocol.WindowSize{Cols: 80, Rows: 24}

// startPTY starts the program as a session leader whose controlling terminal
// is a new PTY, sized before the program starts.
func (ss *session) startPTY(req *protocol.Exec, acct *account.Account) (io.WriteCloser, error) {
	master, slave, err := openPTY()
	if err != nil {
		return nil, err
	}
	defer slave.Close()
	size := req.Size.Clamped()
	if !size.Valid() {
		size = fallbackSize
	}
	if err := setSize(master, size); err != nil {
		master.Close()
		return nil, err
	}
	ss.size = size
	if ss.keep {
		ss.newScreen(size)
	}
	if len(req.Modes) > 0 {
		if err := setModes(slave, req.Modes); err != nil {
			master.Close()
			return nil, err
		}
	}
	if err := ownTerminal(slave, acct); err != nil {
		master.Close()
		return nil, err
	}
	ss.cmd.Stdin, ss.cmd.Stdout, ss.cmd.Stderr = slave, slave, slave
	ss.cmd.SysProcAttr.Setctty = true
	ss.cmd.SysProcAttr.Ctty = 0 // the child's fd 0, the slave
	if err := ss.cmd.Start(); err != nil {
		master.Close()
		return nil, err
	}
	ss.master = master
	ss.outs = []*output{{f: master, t: protocol.TypeStdout}}
	return master, nil
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

// resize applies a window size in arrival order. Pipe sessions and sizes
// without a width or height are ignored; larger than MaxWindowDim is
// clamped.
func (ss *session) resize(s protocol.WindowSize) {
	if ss.master == nil || !s.Valid() {
		return
	}
	s = s.Clamped()
	ss.sizeMu.Lock()
	defer ss.sizeMu.Unlock()
	ss.sizeGen++
	ss.applySizeLocked(s)
}

func (ss *session) applySizeLocked(s protocol.WindowSize) {
	if err := setSize(ss.master, s); err != nil {
		ss.log.Warn("resize failed", "size", s, "err", err)
		return
	}
	ss.size = s
	ss.srv.resizes.Add(1)
	if ss.screen != nil {
		ss.screen.noteSize(ss.sentNow.Load(), s)
	}
	if ss.log.Enabled(context.Background(), slog.LevelDebug) { // the hot path allocates nothing for a disabled log
		ss.log.Debug("resize applied", "size", s)
	}
}

// redrawDelay is how long the terminal stays one column wider during a
// redraw: long enough for the program to read the size after its SIGWINCH
// (shpool waits 50 ms the same way).
const redrawDelay = 50 * time.Millisecond

// redraw makes the program repaint at size s (or its current size): the
// kernel sends no SIGWINCH for a size that does not change, so the
// terminal goes one column wider, then to s, as a client attaches
// (martanne/abduco#30 is the blank screen without it). A resize from the
// client in between wins over the way back.
func (ss *session) redraw(s protocol.WindowSize) {
	if ss.master == nil {
		return
	}
	ss.sizeMu.Lock()
	if !s.Valid() {
		s = ss.size
	}
	s = s.Clamped()
	wider := s
	if wider.Cols < protocol.MaxWindowDim {
		wider.Cols++
	} else {
		wider.Cols--
	}
	ss.sizeGen++
	gen := ss.sizeGen
	ss.applySizeLocked(wider)
	ss.sizeMu.Unlock()
	time.AfterFunc(redrawDelay, func() {
		ss.sizeMu.Lock()
		defer ss.sizeMu.Unlock()
		if ss.sizeGen == gen {
			ss.applySizeLocked(s)
		}
	})
}

// currentSize is the terminal's size.
func (ss *session) currentSize() protocol.WindowSize {
	ss.sizeMu.Lock()
	defer ss.sizeMu.Unlock()
	return ss.size
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
