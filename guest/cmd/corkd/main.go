// Command corkd is cork's guest agent. It runs inside the VM, accepts
// sessions from cork over vsock, a unix socket or its own stdin/stdout, and
// starts each requested program on a PTY or on pipes as the requested user.
package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
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

	"github.com/spf13/pflag"

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
// the relays of other streaming sessions hold them all: under 16 streams
// on two cores, a resize took p50 1.0 ms with 2 Ps, 0.4-0.6 with 16 to
// 64, against 0.16 idle. Ps beyond the cores cost a little memory each;
// the kernel still shares the cores among the threads that run.
const minProcs = 32

func serve(args []string) int {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(max(runtime.GOMAXPROCS(0), minProcs))
	}
	fs := pflag.NewFlagSet("corkd serve", pflag.ContinueOnError)
	listens := fs.StringArray("listen", nil, "listen on `URL`: unix:///run/corkd.sock or vsock://:PORT (repeatable)")
	stdio := fs.Bool("stdio", false, "serve exactly one session on stdin/stdout, then exit")
	allowUIDs := fs.UintSlice("allow-uid", nil, "admit unix socket peer `UID`, whose sessions run only as itself (repeatable)")
	trustUIDs := fs.UintSlice("allow-uid-as-any", nil, "admit unix socket peer `UID` and let its sessions run as any user, root included (repeatable)")
	socketGroup := fs.String("socket-group", "", "make unix sockets mode 0660 for `GROUP` (a name or gid) instead of 0600")
	allowCIDs := fs.UintSlice("allow-cid", nil, "vsock peer CIDs allowed (default 2, the host)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error; logs go to stderr")
	handshake := fs.Duration("handshake-timeout", agent.DefaultHandshakeTimeout, "time a connection has from connect to its session, or its answer; pings do not extend it")
	grace := fs.Duration("disconnect-grace", agent.DefaultDisconnectGrace, "time between SIGHUP and SIGKILL when a connection drops")
	maxSessions := fs.Int("max-sessions", agent.DefaultMaxSessions, fmt.Sprintf("concurrent sessions and copies (1 to %d)", maxSessionsLimit))
	maxSessionsUID := fs.Int("max-sessions-per-uid", agent.DefaultMaxSessionsUID, "concurrent sessions and copies of one uid admitted with --allow-uid")
	maxPending := fs.Int("max-pending", agent.DefaultMaxPending, "connections not yet admitted to a session, in total")
	maxPendingPeer := fs.Int("max-pending-per-uid", agent.DefaultMaxPendingPeer, "connections not yet admitted to a session, from one peer uid (vsock: one CID)")
	maxFrame := fs.Int("max-frame", protocol.MaxPayload, "largest frame payload accepted, in bytes (64 KiB to 1 MiB)")
	maxKept := fs.Int("max-kept", agent.DefaultMaxKept, "kept sessions, running and exited")
	maxKeptPerUID := fs.Int("max-kept-per-uid", agent.DefaultMaxKeptPerUID, "kept sessions of each uid admitted with --allow-uid, running and exited")
	keepBuffer := fs.Int("keep-buffer", agent.DefaultKeepBuffer, "output bytes each kept session keeps for a host that resumes")
	linger := fs.Duration("linger", agent.DefaultLinger, "longest a kept session runs detached, or is remembered after exiting detached; cork may ask for less, never more (0: forever)")
	scrollback := fs.Int("screen-scrollback", agent.DefaultScreenScrollback, "lines scrolled off a kept session's screen that it keeps, for attach to show (0 to 10000)")
	keepSocket := fs.String("keep-socket", defaultKeepSocket(), "with --stdio: the unix socket of the corkd that keeps sessions, started if none listens (env CORKD_KEEP_SOCKET)")
	pidFile := fs.String("pid-file", "", "write corkd's pid to `FILE` while it serves")
	forwarding := forwardFlags(fs)
	keeper := fs.Bool("keeper", false, "serve as the keeper a --stdio corkd starts: hold the lock it hands over on descriptor 3, and make the socket again if it goes")
	fs.MarkHidden("keeper")
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: corkd serve [--stdio] [--listen URL]...\n%s", fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(os.Stderr, "corkd: %v\n", err)
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "corkd: --log-level %q: want debug, info, warn or error\n", *logLevel)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if *maxFrame < 64<<10 || *maxFrame > protocol.MaxPayload {
		fmt.Fprintf(os.Stderr, "corkd: --max-frame %d: want 65536 to %d\n", *maxFrame, protocol.MaxPayload)
		return 2
	}
	if *handshake <= 0 {
		// Zero would take the default, and a negative one would cut
		// every connection at once: neither is what was asked for.
		fmt.Fprintf(os.Stderr, "corkd: --handshake-timeout %v: want a positive duration, such as 10s\n", *handshake)
		return 2
	}
	if !*stdio && len(*listens) == 0 {
		fmt.Fprintln(os.Stderr, "corkd: nothing to serve: give --stdio or at least one --listen URL")
		return 2
	}
	if *stdio && len(*listens) > 0 {
		fmt.Fprintln(os.Stderr, "corkd: --stdio serves one session and exits; it does not combine with --listen")
		return 2
	}

	// A write to a host that has gone must be an error, not a SIGPIPE that
	// kills corkd before it can hang up the session. Notify (not Ignore)
	// keeps the default disposition for the programs corkd starts.
	sigpipe := make(chan os.Signal, 1)
	signal.Notify(sigpipe, syscall.SIGPIPE)

	if *maxSessions < 1 || *maxSessions > maxSessionsLimit {
		fmt.Fprintf(os.Stderr, "corkd: --max-sessions %d: want 1 to %d\n", *maxSessions, maxSessionsLimit)
		return 2
	}
	if *maxSessionsUID < 1 || *maxPending < 1 || *maxPendingPeer < 1 {
		fmt.Fprintf(os.Stderr, "corkd: --max-sessions-per-uid %d, --max-pending %d, --max-pending-per-uid %d: want at least 1 each\n",
			*maxSessionsUID, *maxPending, *maxPendingPeer)
		return 2
	}
	if *keepBuffer < 4<<10 || *keepBuffer > 64<<20 {
		fmt.Fprintf(os.Stderr, "corkd: --keep-buffer %d: want 4096 to %d\n", *keepBuffer, 64<<20)
		return 2
	}
	if *maxKeptPerUID < 1 {
		fmt.Fprintf(os.Stderr, "corkd: --max-kept-per-uid %d: want at least 1\n", *maxKeptPerUID)
		return 2
	}
	cfg := agent.Config{
		Logger:            log,
		Software:          "corkd " + version,
		HandshakeTimeout:  *handshake,
		DisconnectGrace:   *grace,
		MaxSessions:       *maxSessions,
		MaxSessionsPerUID: *maxSessionsUID,
		MaxPending:        *maxPending,
		MaxPendingPerPeer: *maxPendingPeer,
		MaxFrame:          *maxFrame,
		MaxKept:           *maxKept,
		MaxKeptPerUID:     *maxKeptPerUID,
		KeepBuffer:        *keepBuffer,
		Linger:            *linger,
		ScreenScrollback:  *scrollback,
	}
	if *scrollback < 0 || *scrollback > 10000 {
		fmt.Fprintf(os.Stderr, "corkd: --screen-scrollback %d: want 0 to 10000\n", *scrollback)
		return 2
	}
	if *scrollback == 0 {
		cfg.ScreenScrollback = -1 // none, not the default
	}
	if *linger == 0 {
		cfg.Linger = -1 // forever
	}
	var err error
	if cfg.Forward, err = forwarding(); err != nil {
		fmt.Fprintf(os.Stderr, "corkd: %v\n", err)
		return 2
	}
	if *stdio {
		cfg.KeptVia = keptVia(*keepSocket, *logLevel, log)
	}
	srv := agent.New(cfg)
	if *keeper {
		if err := holdKeeperLock(); err != nil {
			fmt.Fprintf(os.Stderr, "corkd: %v\n", err)
			return 2
		}
	}
	if *pidFile != "" {
		if err := writePidFile(*pidFile); err != nil {
			fmt.Fprintf(os.Stderr, "corkd: --pid-file: %v\n", err)
			return 1
		}
		defer removePidFile(*pidFile)
	}
	// kill -USR1 corkd logs its figures: what a soak test or an operator
	// watches for leaks.
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	go func() {
		for range usr1 {
			st := srv.ReadStats()
			log.Info("stats", "sessions", st.Sessions, "goroutines", st.Goroutines, "fds", st.FDs, "rss_kib", st.RSSKiB,
				"resizes", st.Resizes, "pending", st.Pending, "threads", st.Threads)
		}
	}()
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	if *stdio {
		return serveStdio(srv, stop, log)
	}

	opts := listen.Options{Logger: log}
	for _, u := range *allowUIDs {
		opts.AllowUIDs = append(opts.AllowUIDs, uint32(u))
	}
	for _, u := range *trustUIDs {
		opts.TrustUIDs = append(opts.TrustUIDs, uint32(u))
	}
	if *socketGroup != "" {
		gid, err := lookupGroup(*socketGroup)
		if err != nil {
			fmt.Fprintf(os.Stderr, "corkd: --socket-group: %v\n", err)
			return 2
		}
		opts.SocketGroup = &gid
	}
	for _, c := range *allowCIDs {
		opts.AllowCIDs = append(opts.AllowCIDs, uint32(c))
	}
	var ls []net.Listener
	for _, addr := range *listens {
		var l net.Listener
		var err error
		if *keeper {
			l, err = keeperListen(addr, opts)
		} else {
			l, err = listen.Listen(addr, opts)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "corkd: %v\n", err)
			return 1
		}
		log.Info("listening", "addr", addr)
		ls = append(ls, l)
	}

	return serveListeners(srv, ls, stop, log)
}

// maxSessionsLimit keeps corkd's threads under the Go runtime's limit of
// 10,000, past which it dies: a session holds at most two threads, and
// the runtime needs about GOMAXPROCS more. The runtime's limit is left as
// it is: lower, it would only bring that death nearer.
const maxSessionsLimit = 4096

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
