package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corkvm/cork/host/client"
	"github.com/corkvm/cork/host/term"
	"github.com/corkvm/cork/protocol"
)

// runSession runs sess (an exec or an attach) on the operator's terminal.
func runSession(t *target, sess *client.Session, kf keptFlags) int {
	c := newConsole(sess)
	var keys []byte
	if c.keep {
		var err error
		if keys, err = term.ParseDetachKeys(kf.detachKeys); err != nil {
			return fail("%v", err)
		}
	}
	ctx := context.Background()
	conn, finish, err := t.dial(ctx)
	if err != nil {
		return fail("%v", err)
	}
	defer close(c.stop)
	c.wireOutput()
	c.wireInput(keys)
	if c.keep {
		c.wireKept(t, kf.reconnect)
	}
	c.wireSignals()

	// Raw mode for the session's life: restored before any message is
	// printed, and by the deferred call on any other way out.
	restore := func() {}
	if c.tty {
		r, err := driveTerminal(c.stdinFd, c.sizeFd, sess, c.stop)
		if err != nil {
			conn.Close()
			return fail("putting the terminal in raw mode: %v", err)
		}
		restore = r
		defer restore()
	}
	exit, err := c.run(ctx, conn)
	restore()
	return exitStatus(outcome{
		sess: sess, keep: c.keep, exit: exit, err: err, transport: finish(),
		again: fmt.Sprintf("cork attach %s%s", t.flagsForMessages(), sessionRef(sess)),
	})
}

// console is the operator's side of one session: which of cork's stdio
// are terminals, and what runSession wires from them into the session.
type console struct {
	sess              *client.Session
	tty, keep         bool
	stdinFd, stdoutFd int
	sizeFd            int           // the terminal whose size the session follows, or -1
	out               *term.Stdout  // stdout, when it is a terminal the session draws on
	stop              chan struct{} // closed when runSession returns
	detach            chan struct{} // closed to detach from a kept session
	detachOnce        sync.Once
}

// newConsole finds which of cork's stdio are terminals and, for a session
// on a PTY, puts the terminal's TERM, size and modes in its request.
func newConsole(sess *client.Session) *console {
	c := &console{
		sess: sess, tty: sess.Exec.TTY, keep: sess.Exec.Keep,
		stdinFd: int(os.Stdin.Fd()), stdoutFd: int(os.Stdout.Fd()), sizeFd: -1,
		stop: make(chan struct{}), detach: make(chan struct{}),
	}
	if sess.Attach != nil {
		c.tty, c.keep = true, true
	}
	if !c.tty {
		return c
	}
	req := &sess.Exec
	req.Term = os.Getenv("TERM")
	for _, fd := range []int{c.stdinFd, c.stdoutFd} {
		if term.IsTerminal(fd) {
			c.sizeFd = fd
			break
		}
	}
	if c.sizeFd < 0 {
		return c
	}
	if s, err := term.Size(c.sizeFd); err == nil {
		req.Size = s
		if sess.Attach != nil {
			sess.Attach.Size = s
		}
	}
	// The operator's erase character, IUTF8 and the rest, as ssh sends
	// them with its pty-req; read before raw mode.
	if m, err := term.Modes(c.sizeFd); err == nil {
		req.Modes = m
	}
	return c
}

func (c *console) detachNow() { c.detachOnce.Do(func() { close(c.detach) }) }

// wireOutput gives the session cork's stdout and stderr; stdout, when it
// is a terminal the session draws on, through a term.Stdout that can
// leave it tidy.
func (c *console) wireOutput() {
	sess := c.sess
	sess.Stdout, sess.Stderr, sess.Software = os.Stdout, os.Stderr, "cork "+Version
	if !c.tty || !term.IsTerminal(c.stdoutFd) {
		return
	}
	c.out = term.NewStdout(os.Stdout)
	sess.Stdout = c.out
	if c.keep {
		// corkd leaves out of a restore the history this terminal got
		// from the session already.
		sess.Exec.Terminal = term.Token(c.stdoutFd)
		if sess.Attach != nil {
			sess.Attach.Terminal = sess.Exec.Terminal
		}
	}
}

// wireInput gives the session cork's stdin when it takes input: for a
// kept session, a terminal that closes detaches, and the detach keys,
// when there are some, are taken out of the input.
func (c *console) wireInput(keys []byte) {
	sess := c.sess
	if !sess.Exec.Stdin && sess.Attach == nil {
		return
	}
	var in io.Reader = os.Stdin
	if c.keep && term.IsTerminal(c.stdinFd) {
		in = terminalInput{r: os.Stdin, gone: c.detachNow, stop: c.stop}
	}
	sess.Stdin = in
	if !c.keep || len(keys) == 0 {
		return
	}
	f := term.NewDetachFilter(in, keys, term.DetachKeyTimeout)
	sess.Stdin = f
	if sess.Attach != nil && sess.Attach.ReadOnly {
		// A watcher sends no input; it reads the terminal only for the
		// detach keys.
		sess.Stdin = nil
		go io.Copy(io.Discard, f)
	}
	go func() {
		select {
		case <-f.Detached():
			c.detachNow()
		case <-c.stop:
		}
	}()
}

// wireKept lets the user detach from a kept session and, when reconnect
// is not 0, has the session dial again when its connection drops.
func (c *console) wireKept(t *target, reconnect time.Duration) {
	c.sess.Detach = c.detach
	if reconnect > 0 {
		c.sess.Reconnect = reconnect
		c.sess.Redial = func(ctx context.Context) (io.ReadWriteCloser, error) {
			conn, _, err := t.dial(ctx)
			return conn, err
		}
	}
}

// wireSignals forwards the signals that would end cork, from before the
// terminal goes raw, so that none can leave it raw. For a kept session,
// SIGHUP (the terminal closing) and SIGTERM detach instead.
func (c *console) wireSignals() {
	var detachOn []syscall.Signal
	if c.keep {
		detachOn = []syscall.Signal{syscall.SIGHUP, syscall.SIGTERM}
	}
	c.sess.Signals = forwardSignals(c.stop, detachOn, c.detachNow)
}

// run runs the session over conn. When the program did not exit, it
// leaves the terminal as the program's exit would have, with the cursor
// on a line of its own below what the program drew, for cork's message.
func (c *console) run(ctx context.Context, conn io.ReadWriteCloser) (protocol.Exit, error) {
	if c.out == nil {
		return c.sess.Run(ctx, conn)
	}
	c.out.GuardTitle()
	exit, err := c.sess.Run(ctx, conn)
	if err != nil {
		c.out.Leave()
	} else if c.keep {
		c.out.FreshLine() // for the [exited N] line
	}
	c.out.RestoreTitle()
	return exit, err
}

// driveTerminal sends the session the size changes of sizeFd (when it is
// at least 0) until stop is closed, and puts stdinFd, when it is a
// terminal, in raw mode, kept across stops: a continue makes the program
// repaint. It returns the function that restores the terminal.
func driveTerminal(stdinFd, sizeFd int, sess *client.Session, stop <-chan struct{}) (restore func(), err error) {
	if sizeFd >= 0 {
		sess.Sizes = client.NewSizeSlot()
		term.WatchSize(sizeFd, sess.Sizes.Put, stop)
	}
	if !term.IsTerminal(stdinFd) {
		return func() {}, nil
	}
	raw, err := term.EnterRaw(stdinFd)
	if err != nil {
		return nil, err
	}
	var redraw func()
	if sess.Sizes != nil {
		redraw = func() { term.Redraw(sizeFd, sess.Sizes.Put) }
	}
	term.KeepAcrossStops(raw, redraw, stop)
	return raw.Restore, nil
}

// terminalInput is the operator's terminal as a kept session's input.
// When it ends (the terminal closed: end-of-file or EIO), cork detaches
// rather than typing end-of-file into the session, which would end a
// program that exits on it.
type terminalInput struct {
	r    io.Reader
	gone func()
	stop <-chan struct{}
}

func (t terminalInput) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil {
		t.gone()
		<-t.stop
		return n, io.EOF
	}
	return n, nil
}

// forwardSignals turns the signals that would end cork into Signal frames
// for the program, but those of detachOn, which call detach instead. Only
// these are forwarded: SIGWINCH is a resize, and the Go runtime's SIGURG,
// SIGCHLD and SIGPIPE belong to cork itself (containerd#4935 forwarded
// SIGURG to containers).
func forwardSignals(stop <-chan struct{}, detachOn []syscall.Signal, detach func()) <-chan string {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT)
	out := make(chan string, 4)
	go func() {
		defer signal.Stop(sigs)
		for {
			select {
			case s := <-sigs:
				sig := s.(syscall.Signal)
				if slices.Contains(detachOn, sig) {
					detach()
					continue
				}
				name := strings.TrimPrefix(unix.SignalName(sig), "SIG")
				select {
				case out <- name:
				default: // the connection is stuck; cork will end anyway
				}
			case <-stop:
				return
			}
		}
	}()
	return out
}
