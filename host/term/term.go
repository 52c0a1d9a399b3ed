// Package term is the operator's terminal: raw mode, its size, its size
// changes, and its output left tidy when a session ends (Stdout).
package term

import (
	"os"
	"os/signal"

	"golang.org/x/sys/unix"
	xterm "golang.org/x/term"

	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/ttymodes"
)

// IsTerminal reports whether fd is a terminal.
func IsTerminal(fd int) bool { return xterm.IsTerminal(fd) }

// Modes returns fd's terminal modes for an exec request. Read them before
// raw mode is set: they are the operator's settings, not raw mode's.
func Modes(fd int) (map[string]uint32, error) {
	t, err := unix.IoctlGetTermios(fd, ioctlGetTermios)
	if err != nil {
		return nil, err
	}
	return ttymodes.Encode(t), nil
}

// Size returns fd's window size, pixels included.
func Size(fd int) (protocol.WindowSize, error) {
	ws, err := unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ)
	if err != nil {
		return protocol.WindowSize{}, err
	}
	return protocol.WindowSize{Cols: ws.Col, Rows: ws.Row, XPixel: ws.Xpixel, YPixel: ws.Ypixel}, nil
}

// WatchSize calls put with fd's size on every SIGWINCH until stop is
// closed. It reads the size when it handles the signal, so signals that
// arrive while it is busy collapse into one reading of the newest size.
func WatchSize(fd int, put func(protocol.WindowSize), stop <-chan struct{}) {
	w := &sizeWatch{fd: fd, put: put}
	notifyWinch(w, stop)
	waitWinch(w, stop)
}

// notifyWinch calls w.update for each SIGWINCH os/signal delivers, until
// stop is closed.
func notifyWinch(w *sizeWatch, stop <-chan struct{}) {
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, unix.SIGWINCH)
	go func() {
		defer signal.Stop(winch)
		for {
			select {
			case <-winch:
				w.update()
			case <-stop:
				return
			}
		}
	}()
}
