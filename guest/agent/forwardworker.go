package agent

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corkvm/cork/protocol"
)

// Forwarding workers. corkd keeps many Ps for its sessions (see corkd's
// minProcs), and a Go process with idle Ps wakes a second thread for
// nearly every goroutine it readies: a forwarded connection's set-up
// woke corkd's threads three times as often as sshd's single thread. So a
// forwarding connection on a socket is served by a process of its own,
// as sshd serves each connection: corkd's forward-worker, started with
// the connection once corkd has admitted it, with one P.
//
// The worker is corkd's, not the user's: it takes the user's identity
// for each socket it makes, thread by thread, as corkd does. A worker
// running as the user would be the user's to trace (sshd makes its
// per-user child undumpable for this), and through it the user would
// read the host's streams, which the host may send as root to a service
// the user must not see, and corkd's stderr, which may be root's
// terminal. It has / for its directory, so it holds no directory of the
// user's or of corkd's starter.
//
// The worker's files: its connection is fd 3; fd 4 holds its job (a
// length, then forwardWork as JSON) and then the bytes corkd read after
// the Forward frame; fd 5 is its socket for stream leases
// (forwardleases.go); its stdin reads EOF when corkd ends or shuts down.
const (
	workerConnFD   = 3
	workerJobFD    = 4
	workerLeasesFD = 5
)

// forwardWork is what a worker is told: the job and corkd's limits.
type forwardWork struct {
	Job      forwardJob
	Forward  ForwardConfig
	MaxFrame int
}

// maxWork bounds the job a worker reads: a request, an account (whose
// groups may be many) and a few limits.
const maxWork = 1 << 20

// handOff serves job in a worker (Config.ForwardWorker) and returns once
// the worker has ended. It reports false when it did not: no worker is
// configured, the connection is no socket (a serial port, corkd's stdio),
// or the worker did not start (logged); the caller serves job itself.
func (s *Server) handOff(hs *handshake, job *forwardJob) bool {
	if s.cfg.ForwardWorker == nil {
		return false
	}
	tc, ok := hs.c.(*threadConn)
	if !ok {
		return false
	}
	work, err := encodeWork(&forwardWork{Job: *job, Forward: s.cfg.Forward, MaxFrame: s.cfg.MaxFrame}, hs.r.Buffered())
	if err != nil {
		s.log.Warn("forwarding in corkd: the job could not be written for a worker", "err", err)
		return false
	}
	cmd, stop, err := s.startWorker(tc, work)
	if err != nil {
		s.warnPeer(hs.entry.peer, "forwarding in corkd: no worker started", "err", err)
		return false
	}
	// Shutdown closes the admitted connections: for this one, that is
	// the worker's stdin, which ends it. Once Shutdown has begun, the
	// worker is ended here.
	if !s.conns.setCloser(hs.entry, stop) {
		stop.Close()
	}
	tc.closeHandedOver()
	if err := cmd.Wait(); err != nil {
		s.log.Warn("forwarding worker ended", "forward", job.ID, "pid", cmd.Process.Pid, "err", err)
	}
	stop.Close()
	return true
}

// startWorker starts a worker on tc's socket with its job work, and
// returns it and the pipe whose close ends it.
func (s *Server) startWorker(tc *threadConn, work []byte) (cmd *exec.Cmd, stop *os.File, err error) {
	// Each file is the worker's (closed here once it has started) or
	// corkd's (closed here only if it did not).
	var theirs, ours []*os.File
	defer func() {
		for _, f := range theirs {
			f.Close()
		}
		if err != nil {
			for _, f := range ours {
				f.Close()
			}
		}
	}()
	conn, err := socketFile(tc) // in corkd's poller until closed
	if err != nil {
		return nil, nil, err
	}
	theirs = append(theirs, conn)
	jobR, jobW, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	theirs, ours = append(theirs, jobR), append(ours, jobW)
	stopR, stopW, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	theirs, ours = append(theirs, stopR), append(ours, stopW)
	leasesHere, leasesThere, err := socketPair()
	if err != nil {
		return nil, nil, err
	}
	theirs, ours = append(theirs, leasesThere), append(ours, leasesHere)
	cmd = s.cfg.ForwardWorker()
	cmd.Stdin = stopR
	cmd.ExtraFiles = append([]*os.File{conn, jobR, leasesThere}, cmd.ExtraFiles...)
	cmd.Env = workerEnv()
	cmd.Dir = "/"
	// A process group of its own, so that a ^C for corkd's terminal stops
	// corkd, whose shutdown ends the worker once it has cleaned up; but
	// corkd's session, so that the kernel schedules it with corkd
	// (autogroup), as it did corkd's own threads: in a session of its own
	// its connect times and single-stream throughput fell back to ssh's.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	go func() {
		s.serveLeases(leasesHere)
		leasesHere.Close()
	}()
	// The worker reads its job first. One that died at once makes this
	// write fail, and its Wait tells why; one stopped does not hold corkd
	// here.
	jobW.SetWriteDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	jobW.Write(work)
	jobW.Close()
	return cmd, stopW, nil
}

// workerEnv is a worker's environment: one P, and corkd's temporary
// directory, where agent sockets go.
func workerEnv() []string {
	env := []string{"GOMAXPROCS=1"}
	if dir, ok := os.LookupEnv("TMPDIR"); ok {
		env = append(env, "TMPDIR="+dir)
	}
	return env
}

// socketPair returns a connected pair of unix stream sockets, both
// non-blocking, so that either end read through Go's poller holds no
// thread.
func socketPair() (*os.File, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, os.NewSyscallError("socketpair", err)
	}
	return os.NewFile(uintptr(fds[0]), "leases"), os.NewFile(uintptr(fds[1]), "leases"), nil
}

// socketFile returns a descriptor of its own for tc's socket.
func socketFile(tc *threadConn) (*os.File, error) {
	var fd int
	var dupErr error
	if err := tc.rc.Control(func(s uintptr) { fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if dupErr != nil {
		return nil, os.NewSyscallError("fcntl", dupErr)
	}
	return os.NewFile(uintptr(fd), "forwarding connection"), nil
}

// encodeWork is a worker's fd 4: the length of w as JSON, the JSON, then
// the bytes read ahead.
func encodeWork(w *forwardWork, ahead []byte) ([]byte, error) {
	j, err := json.Marshal(w)
	if err != nil {
		return nil, err
	}
	if len(j) > maxWork {
		return nil, fmt.Errorf("a job of %d bytes", len(j))
	}
	b := binary.BigEndian.AppendUint32(nil, uint32(len(j)))
	return append(append(b, j...), ahead...), nil
}

// decodeWork reads what encodeWork wrote.
func decodeWork(r io.Reader) (*forwardWork, []byte, error) {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, nil, fmt.Errorf("reading the job: %w", err)
	}
	size := binary.BigEndian.Uint32(n[:])
	if size > maxWork {
		return nil, nil, fmt.Errorf("a job of %d bytes, more than %d", size, maxWork)
	}
	j := make([]byte, size)
	if _, err := io.ReadFull(r, j); err != nil {
		return nil, nil, fmt.Errorf("reading the job: %w", err)
	}
	var w forwardWork
	if err := json.Unmarshal(j, &w); err != nil {
		return nil, nil, fmt.Errorf("reading the job: %w", err)
	}
	ahead, err := io.ReadAll(io.LimitReader(r, protocol.MaxPayload))
	return &w, ahead, err
}

// ServeForwardWorker is corkd's forward-worker: it serves the forwarding
// connection corkd handed it (see handOff) until the connection ends or
// stop, corkd's end of its stdin, reads EOF. cfg gives its log; the
// limits come from corkd.
func ServeForwardWorker(cfg Config, stop io.Reader) error {
	jobFile := os.NewFile(workerJobFD, "job")
	work, ahead, err := decodeWork(jobFile)
	jobFile.Close()
	if err != nil {
		return err
	}
	if err := unix.SetNonblock(workerConnFD, true); err != nil {
		return fmt.Errorf("the connection (fd %d): %w", workerConnFD, err)
	}
	conn := os.NewFile(workerConnFD, "connection") // pollable: non-blocking
	cfg.Forward, cfg.MaxFrame = work.Forward, work.MaxFrame
	s := New(cfg)
	s.streams = newLeases(os.NewFile(workerLeasesFD, "leases"))
	// corkd's end, or a signal to the worker itself, closes the
	// connection, and the forward ends as when the host leaves: its
	// sockets and listeners are removed.
	ended, stopped := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	go func() {
		io.Copy(io.Discard, stop)
		stopped()
	}()
	go func() {
		<-ended.Done()
		conn.Close()
	}()
	r := protocol.NewReader(io.MultiReader(bytes.NewReader(ahead), conn))
	r.SetLimit(cfg.MaxFrame)
	w := protocol.NewWriter(conn)
	refuse := func(kind, msg string) {
		s.log.Warn("refused", "forward", work.Job.ID, "kind", kind, "err", msg)
		w.WriteJSON(protocol.TypeError, &protocol.Error{Kind: kind, Message: msg})
	}
	s.serveForwarding(&work.Job, conn, r, w, refuse)
	conn.Close()
	return nil
}
