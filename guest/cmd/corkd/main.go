// Command corkd is cork's guest agent. It runs inside the VM, accepts
// sessions from cork over vsock, a unix socket or its own stdin/stdout, and
// starts each requested program on a PTY or on pipes as the requested user.
package main

import (
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"os/signal"
	"os/user"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corkvm/cork/guest/agent"
	"github.com/corkvm/cork/guest/listen"
	"github.com/corkvm/cork/protocol"
)

// stamp carries corkd's version, set at build time as protocol.Stamp
// describes, for cork bake to read from the binary. It is left unset
// otherwise, and versionOf does not spell protocol.StampMarker, so that the
// binary holds no other copy of the marker for cork bake to find.
var stamp string

var version = versionOf(stamp)

func versionOf(stamp string) string {
	_, v, ok := strings.Cut(stamp, ":")
	v, ok2 := strings.CutSuffix(v, protocol.StampEnd)
	if !ok || !ok2 || v == "" {
		return "dev"
	}
	return v
}

const usage = `usage:
  corkd serve [flags]    serve sessions (see corkd serve --help)
  corkd version          print corkd's version
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		os.Exit(serve(os.Args[2:]))
	case "forward-worker":
		os.Exit(runForwardWorker(os.Args[2:]))
	case "version", "--version":
		fmt.Printf("corkd %s (protocol %d)\n", version, protocol.MaxVersion)
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "corkd: unknown command %q\n%s", os.Args[1], usage)
		os.Exit(2)
	}
}

// minProcs is the fewest Ps (Go's run slots) corkd runs with. A session's
// frames are read by a thread that sleeps in poll(2) (agent.threadConn);
// woken with a resize, it needs a P to go on, and with one P per core
// the relays of other streaming sessions hold them all, so the resize
// waits for one. Ps beyond the cores cost a little memory each; the
// kernel still shares the cores among the threads that run.
const minProcs = 32

// serve is corkd serve: it checks its flags, sets up, and serves until a
// signal or, with --stdio, the one session's end; it returns the exit code.
func serve(args []string) int {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(max(runtime.GOMAXPROCS(0), minProcs))
	}
	f, code, ok := parseServeFlags(args)
	if !ok {
		return code
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: f.level}))
	// Descriptors corkd inherited without close-on-exec (its starter's
	// pipes, say) must not reach the programs and workers it starts,
	// which get only what corkd gives them. (startKeeper marks them too:
	// it does not count on its caller.)
	if err := unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC); err != nil {
		log.Warn("cannot mark inherited descriptors close-on-exec; sessions may hold them", "err", err)
	}
	// A write to a host that has gone must be an error, not a SIGPIPE that
	// kills corkd before it can hang up the session. Notify (not Ignore)
	// keeps the default disposition for the programs corkd starts.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)

	srv := agent.New(f.config(log))
	if f.keeper {
		if err := holdKeeperLock(); err != nil {
			fmt.Fprintf(os.Stderr, "corkd: %v\n", err)
			return 2
		}
	}
	if f.pidFile != "" {
		if err := writePidFile(f.pidFile); err != nil {
			fmt.Fprintf(os.Stderr, "corkd: --pid-file: %v\n", err)
			return 1
		}
		defer removePidFile(f.pidFile)
	}
	logStats(srv, log)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	if f.stdio {
		return serveStdio(srv, stop, log)
	}
	ls, err := f.listen(log)
	if err != nil {
		fmt.Fprintf(os.Stderr, "corkd: %v\n", err)
		return 1
	}
	return serveListeners(srv, ls, stop, log)
}

// logStats logs srv's figures on each SIGUSR1 (kill -USR1 corkd): what a
// soak test or an operator watches for leaks.
func logStats(srv *agent.Server, log *slog.Logger) {
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	go func() {
		for range usr1 {
			st := srv.ReadStats()
			log.Info("stats", "sessions", st.Sessions, "goroutines", st.Goroutines, "fds", st.FDs, "rss_kib", st.RSSKiB,
				"resizes", st.Resizes, "pending", st.Pending, "threads", st.Threads)
		}
	}()
}

// listen opens a listener for each --listen; on an error it closes those
// it opened.
func (f *serveFlags) listen(log *slog.Logger) ([]net.Listener, error) {
	opts := f.listenOptions(log)
	var ls []net.Listener
	for _, addr := range f.listens {
		var l net.Listener
		var err error
		if f.keeper {
			l, err = keeperListen(addr, opts)
		} else {
			l, err = listen.Listen(addr, opts)
		}
		if err != nil {
			for _, l := range ls {
				l.Close()
			}
			return nil, err
		}
		log.Info("listening", "addr", addr)
		ls = append(ls, l)
	}
	return ls, nil
}

// shutdownGrace bounds the wait, once every session has ended, for the
// connections still being served (copies, closed by then) to finish.
const shutdownGrace = 5 * time.Second

// serveListeners serves the listeners until a signal in stop or one of
// them fails, then hangs up every session before it returns. A keeper
// that retired (keeperlisten.go) first serves its sessions until they end.
func serveListeners(srv *agent.Server, ls []net.Listener, stop <-chan os.Signal, log *slog.Logger) int {
	closed := make(chan net.Listener, len(ls))
	var wg sync.WaitGroup
	for _, l := range ls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			srv.Serve(l)
			closed <- l
		}()
	}
	select {
	case sig := <-stop:
		log.Info("stopping", "signal", sig.String())
	case l := <-closed:
		if kl, ok := l.(*keeperListener); ok && kl.retired() {
			for _, l := range ls {
				l.Close()
			}
			awaitSessions(srv, stop, log)
			break
		}
		log.Error("a listener closed; stopping", "addr", l.Addr().String())
	}
	for _, l := range ls {
		l.Close()
	}
	wg.Wait()
	srv.Shutdown(shutdownGrace)
	return 0
}

// awaitSessions returns once srv runs no session, or on a signal in stop.
func awaitSessions(srv *agent.Server, stop <-chan os.Signal, log *slog.Logger) {
	t := time.NewTicker(keeperCheck)
	defer t.Stop()
	for srv.Active() > 0 {
		select {
		case sig := <-stop:
			log.Info("stopping", "signal", sig.String())
			return
		case <-t.C:
		}
	}
	log.Info("the retired keeper's last session ended; stopping")
}

// serveStdio serves one session on corkd's stdin and stdout; a signal in
// stop hangs it up.
func serveStdio(srv *agent.Server, stop <-chan os.Signal, log *slog.Logger) int {
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.ServeConn(stdioConn{os.Stdin, os.Stdout})
	}()
	select {
	case <-done:
	case sig := <-stop:
		log.Info("stopping", "signal", sig.String())
		srv.Shutdown(shutdownGrace)
		select {
		case <-done:
		case <-time.After(shutdownGrace):
		}
	}
	return 0
}

// lookupGroup resolves a group name or gid from /etc/group; a number with no
// entry is taken as it is.
func lookupGroup(spec string) (uint32, error) {
	g, err := user.LookupGroup(spec)
	if err != nil {
		n, perr := strconv.ParseUint(spec, 10, 32)
		if perr != nil {
			return 0, fmt.Errorf("no group %q in /etc/group", spec)
		}
		return uint32(n), nil
	}
	n, err := strconv.ParseUint(g.Gid, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("group %q has a bad gid %q", spec, g.Gid)
	}
	return uint32(n), nil
}

// stdioConn is corkd's own stdin and stdout as one connection.
type stdioConn struct {
	io.Reader
	io.Writer
}

func (c stdioConn) Close() error {
	err := os.Stdout.Close()
	if err2 := os.Stdin.Close(); err == nil {
		err = err2
	}
	return err
}
