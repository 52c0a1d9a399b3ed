package agent

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/corkvm/cork/protocol"
)

// DefaultPath is PATH for a session whose environment has none.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// session is one running program and the connection that drives it.
type session struct {
	srv    *Server
	log    *slog.Logger
	w      *protocol.Writer
	cmd    *exec.Cmd
	master *os.File // the PTY master; nil for a pipe session
	in     *inputQueue
	outs   []*output

	reaped chan struct{} // closed when the program has been waited for
	done   chan struct{} // closed when, in addition, its output is drained
	exit   protocol.Exit
}

// errExitReported is start's answer for a program that was not found or
// not executable: that is no refusal but the session's outcome, reported
// to the host as output and Exit, as a shell reports it.
var errExitReported = errors.New("the program could not be executed; its exit was reported")

// start resolves the request and starts the program. Its error is a
// *protocol.Error to refuse the request with, or errExitReported.
func (s *Server) start(id string, req *protocol.Exec, peer Peer, w *protocol.Writer, log *slog.Logger) (*session, error) {
	acct, perr := s.account(req.User, peer)
	if perr != nil {
		return nil, perr
	}
	switching := acct.UID != uint32(os.Geteuid())
	dir, perr := workdir(req.Dir, acct)
	if perr != nil {
		return nil, perr
	}
	env := s.environ(req, acct, dir)
	path, fail := lookPath(req.Argv[0], lookupEnv(env, "PATH"), dir, acct)
	if fail != nil {
		s.reportExecFailure(w, req, fail)
		return nil, errExitReported
	}

	cmd := &exec.Cmd{Path: path, Args: req.Argv, Env: env, Dir: dir,
		SysProcAttr: &syscall.SysProcAttr{Setsid: true}}
	if switching {
		// The user switch: in the child, between fork and exec, the Go
		// runtime calls setgroups (the user's groups, listed explicitly),
		// then setgid, then setuid, in that order.
		cmd.SysProcAttr.Credential = acct.Credential()
	}
	ss := &session{srv: s, log: log, w: w, cmd: cmd,
		reaped: make(chan struct{}), done: make(chan struct{})}
	var stdin io.WriteCloser
	var err error
	if req.TTY {
		stdin, err = ss.startPTY(req, acct)
	} else {
		stdin, err = ss.startPipes(req)
	}
	if err != nil {
		if f := startFailure(path, err); f != nil {
			s.reportExecFailure(w, req, f)
			return nil, errExitReported
		}
		return nil, &protocol.Error{Kind: protocol.KindStart, Message: fmt.Sprintf("starting %q: %v", req.Argv[0], err)}
	}
	ss.in = newInputQueue(int(s.cfg.StdinWindow), stdin, req.Stdin)
	log.Info("started", "argv0", req.Argv[0], "pid", cmd.Process.Pid, "uid", acct.UID, "tty", req.TTY)
	if err := w.WriteJSON(protocol.TypeStarted, &protocol.Started{
		Session: id, PID: cmd.Process.Pid, StdinWindow: s.cfg.StdinWindow,
	}); err != nil {
		log.Warn("host gone before the session started", "err", err)
	}
	return ss, nil
}

// startPipes starts the program with its stdin, stdout and stderr on pipes.
func (ss *session) startPipes(req *protocol.Exec) (io.WriteCloser, error) {
	var closeAfterStart, closeOnError []*os.File
	defer func() {
		for _, f := range closeAfterStart {
			f.Close()
		}
	}()
	fail := func(err error) (io.WriteCloser, error) {
		for _, f := range closeOnError {
			f.Close()
		}
		return nil, err
	}
	var stdin *os.File
	if req.Stdin {
		r, w, err := os.Pipe()
		if err != nil {
			return fail(err)
		}
		ss.cmd.Stdin, stdin = r, w
		closeAfterStart, closeOnError = append(closeAfterStart, r), append(closeOnError, w)
	} else {
		null, err := os.Open(os.DevNull)
		if err != nil {
			return fail(err)
		}
		ss.cmd.Stdin = null
		closeAfterStart = append(closeAfterStart, null)
	}
	for _, t := range []protocol.Type{protocol.TypeStdout, protocol.TypeStderr} {
		r, w, err := os.Pipe()
		if err != nil {
			return fail(err)
		}
		if t == protocol.TypeStdout {
			ss.cmd.Stdout = w
		} else {
			ss.cmd.Stderr = w
		}
		closeAfterStart, closeOnError = append(closeAfterStart, w), append(closeOnError, r)
		ss.outs = append(ss.outs, &output{f: r, t: t})
	}
	if err := ss.cmd.Start(); err != nil {
		return fail(err)
	}
	if stdin == nil {
		return nil, nil
	}
	return stdin, nil
}

// InputStopper is implemented by a connection that successive sessions
// share, a serial port: the host may start the next session as soon as it
// reads this one's last frame, so input must stop reaching this session
// before that frame goes out, or its reader could take the next hello.
type InputStopper interface {
	StopInput()
}

// run relays the session until the program ends or the connection drops.
func (ss *session) run(r *protocol.Reader, conn io.ReadWriteCloser) {
	defer ss.cleanup()
	var pumps sync.WaitGroup
	for _, o := range ss.outs {
		pumps.Add(1)
		go func() {
			defer pumps.Done()
			o.pump(ss.w)
		}()
	}
	go ss.in.run(ss)
	go func() {
		err := ss.cmd.Wait()
		var ws syscall.WaitStatus
		if st := ss.cmd.ProcessState; st != nil {
			ws = st.Sys().(syscall.WaitStatus)
		} else {
			ss.log.Error("wait failed", "err", err)
			ws = syscall.WaitStatus(255 << 8)
		}
		ss.exit = exitOf(ws)
		close(ss.reaped)
		deadline := time.Now().Add(ss.srv.cfg.DrainMax)
		for _, o := range ss.outs {
			o.startDrain(ss.srv.cfg.DrainIdle, deadline)
		}
		pumps.Wait()
		close(ss.done)
	}()

	last := func(t protocol.Type, v any) {
		if s, ok := conn.(InputStopper); ok {
			s.StopInput()
		}
		ss.w.WriteJSON(t, v)
	}
	readErr := make(chan error, 1)
	go func() { readErr <- ss.readFrames(r) }()
	select {
	case <-ss.done:
		ss.log.Info("exited", "code", ss.exit.Code, "signal", ss.exit.Signal)
		last(protocol.TypeExit, &ss.exit)
	case err := <-readErr:
		var perr *protocol.Error
		if errors.As(err, &perr) {
			ss.log.Warn("protocol error, ending session", "err", err)
			last(protocol.TypeError, perr)
		} else {
			ss.log.Info("connection lost, hanging up", "err", err)
		}
		ss.hangup()
		<-ss.done
	}
}

// readFrames applies the host's frames until the connection fails. A
// *protocol.Error return is the host's fault; anything else is the
// connection's end.
func (ss *session) readFrames(r *protocol.Reader) error {
	for {
		t, p, err := r.Next()
		if err != nil {
			if errors.Is(err, protocol.ErrTooLarge) || errors.Is(err, protocol.ErrUnknownType) {
				return &protocol.Error{Kind: protocol.KindProtocol, Message: err.Error()}
			}
			return err
		}
		switch t {
		case protocol.TypeStdin:
			if err := ss.in.push(p); err != nil {
				return err
			}
		case protocol.TypeStdinEOF:
			if err := ss.in.closeInput(); err != nil {
				return err
			}
		case protocol.TypeResize:
			size, err := protocol.DecodeResize(p)
			if err != nil {
				return &protocol.Error{Kind: protocol.KindProtocol, Message: err.Error()}
			}
			ss.resize(size)
		case protocol.TypeSignal:
			var sig protocol.Signal
			if err := protocol.Decode(t, p, &sig); err != nil {
				return &protocol.Error{Kind: protocol.KindProtocol, Message: err.Error()}
			}
			ss.signal(sig.Name)
		case protocol.TypePing:
			ss.w.WriteFrame(protocol.TypePong, p)
		default:
			return &protocol.Error{Kind: protocol.KindProtocol, Message: fmt.Sprintf("unexpected %s frame during a session", t)}
		}
	}
}

func (ss *session) cleanup() {
	ss.in.close()
	for _, o := range ss.outs {
		o.f.Close()
	}
}
