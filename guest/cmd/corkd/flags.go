package main

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"time"

	"github.com/spf13/pflag"

	"github.com/corkvm/cork/guest/agent"
	"github.com/corkvm/cork/guest/listen"
	"github.com/corkvm/cork/protocol"
)

// serveFlags is corkd serve's command line. Every flag is checked, and
// what a flag names is resolved, before corkd sets anything up: a bad one
// ends corkd with an error naming it before any socket is bound.
type serveFlags struct {
	listens        []string
	stdio          bool
	allowUIDs      []uint
	trustUIDs      []uint
	socketGroup    string
	allowCIDs      []uint
	logLevel       string
	handshake      time.Duration
	grace          time.Duration
	maxSessions    int
	maxSessionsUID int
	maxPending     int
	maxPendingPeer int
	maxFrame       int
	maxKept        int
	maxKeptPerUID  int
	keepBuffer     int
	linger         time.Duration
	scrollback     int
	keepSocket     string
	pidFile        string
	keeper         bool
	forwarding     func() (agent.ForwardConfig, error)

	// Resolved by check.
	level     slog.Level
	forward   agent.ForwardConfig
	socketGID *uint32
}

// maxSessionsLimit keeps corkd's threads under the Go runtime's limit of
// 10,000, past which it dies: a session holds at most two threads, and
// the runtime needs about GOMAXPROCS more. The runtime's limit is left as
// it is: lower, it would only bring that death nearer.
const maxSessionsLimit = 4096

// newServeFlags defines serve's flags on a new FlagSet.
func newServeFlags() (*pflag.FlagSet, *serveFlags) {
	f := &serveFlags{}
	fs := pflag.NewFlagSet("corkd serve", pflag.ContinueOnError)
	fs.StringArrayVar(&f.listens, "listen", nil, "listen on `URL`: unix:///run/corkd.sock or vsock://:PORT (repeatable)")
	fs.BoolVar(&f.stdio, "stdio", false, "serve exactly one session on stdin/stdout, then exit")
	fs.UintSliceVar(&f.allowUIDs, "allow-uid", nil, "admit unix socket peer `UID`, whose sessions run only as itself (repeatable)")
	fs.UintSliceVar(&f.trustUIDs, "allow-uid-as-any", nil, "admit unix socket peer `UID` and let its sessions run as any user, root included (repeatable)")
	fs.StringVar(&f.socketGroup, "socket-group", "", "make unix sockets mode 0660 for `GROUP` (a name or gid) instead of 0600")
	fs.UintSliceVar(&f.allowCIDs, "allow-cid", nil, "vsock peer CIDs allowed (default 2, the host)")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error; logs go to stderr")
	fs.DurationVar(&f.handshake, "handshake-timeout", agent.DefaultHandshakeTimeout, "time a connection has from connect to its session, or its answer; pings do not extend it")
	fs.DurationVar(&f.grace, "disconnect-grace", agent.DefaultDisconnectGrace, "time between SIGHUP and SIGKILL when a connection drops")
	fs.IntVar(&f.maxSessions, "max-sessions", agent.DefaultMaxSessions, fmt.Sprintf("concurrent sessions and copies (1 to %d)", maxSessionsLimit))
	fs.IntVar(&f.maxSessionsUID, "max-sessions-per-uid", agent.DefaultMaxSessionsUID, "concurrent sessions and copies of one uid admitted with --allow-uid")
	fs.IntVar(&f.maxPending, "max-pending", agent.DefaultMaxPending, "connections not yet admitted to a session, in total")
	fs.IntVar(&f.maxPendingPeer, "max-pending-per-uid", agent.DefaultMaxPendingPeer, "connections not yet admitted to a session, from one peer uid (vsock: one CID)")
	fs.IntVar(&f.maxFrame, "max-frame", protocol.MaxPayload, "largest frame payload accepted, in bytes (64 KiB to 1 MiB)")
	fs.IntVar(&f.maxKept, "max-kept", agent.DefaultMaxKept, "kept sessions, running and exited")
	fs.IntVar(&f.maxKeptPerUID, "max-kept-per-uid", agent.DefaultMaxKeptPerUID, "kept sessions of each uid admitted with --allow-uid, running and exited")
	fs.IntVar(&f.keepBuffer, "keep-buffer", agent.DefaultKeepBuffer, "output bytes each kept session keeps for a host that resumes")
	fs.DurationVar(&f.linger, "linger", agent.DefaultLinger, "longest a kept session runs detached, or is remembered after exiting detached; cork may ask for less, never more (0: forever)")
	fs.IntVar(&f.scrollback, "screen-scrollback", agent.DefaultScreenScrollback, "lines scrolled off a kept session's screen that it keeps, for attach to show (0 to 10000)")
	fs.StringVar(&f.keepSocket, "keep-socket", defaultKeepSocket(), "with --stdio: the unix socket of the corkd that keeps sessions, started if none listens (env CORKD_KEEP_SOCKET)")
	fs.StringVar(&f.pidFile, "pid-file", "", "write corkd's pid to `FILE` while it serves")
	f.forwarding = forwardFlags(fs)
	fs.BoolVar(&f.keeper, "keeper", false, "serve as the keeper a --stdio corkd starts: hold the lock it hands over on descriptor 3, and make the socket again if it goes")
	fs.MarkHidden("keeper")
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: corkd serve [--stdio] [--listen URL]...\n%s", fs.FlagUsages())
	}
	return fs, f
}

// parseServeFlags reads and checks serve's command line. When it reports
// !ok, corkd ends at once with code: --help was asked for, or a flag is
// wrong, which it has said on stderr.
func parseServeFlags(args []string) (f *serveFlags, code int, ok bool) {
	fs, f := newServeFlags()
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil, 0, false
		}
		fmt.Fprintf(os.Stderr, "corkd: %v\n", err)
		return nil, 2, false
	}
	if err := f.check(); err != nil {
		fmt.Fprintf(os.Stderr, "corkd: %v\n", err)
		return nil, 2, false
	}
	return f, 0, true
}

// check checks every flag and resolves what they name; its error names
// the flag.
func (f *serveFlags) check() error {
	if err := f.level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", f.logLevel)
	}
	switch {
	case !f.stdio && len(f.listens) == 0:
		return errors.New("nothing to serve: give --stdio or at least one --listen URL")
	case f.stdio && len(f.listens) > 0:
		return errors.New("--stdio serves one session and exits; it does not combine with --listen")
	}
	if err := f.checkTimes(); err != nil {
		return err
	}
	if err := f.checkLimits(); err != nil {
		return err
	}
	if err := f.checkPeers(); err != nil {
		return err
	}
	var err error
	f.forward, err = f.forwarding()
	return err
}

// checkTimes checks the durations. Zero would take a default, and a
// negative one act at once: neither is what was asked for.
func (f *serveFlags) checkTimes() error {
	if f.handshake <= 0 {
		return fmt.Errorf("--handshake-timeout %v: want a positive duration, such as 10s", f.handshake)
	}
	if f.grace <= 0 {
		return fmt.Errorf("--disconnect-grace %v: want a positive duration, such as 2s", f.grace)
	}
	if f.linger < 0 {
		return fmt.Errorf("--linger %v: want a positive duration, or 0 for forever", f.linger)
	}
	return nil
}

// checkLimits checks the bounds on what peers can make corkd hold.
func (f *serveFlags) checkLimits() error {
	switch {
	case f.maxFrame < 64<<10 || f.maxFrame > protocol.MaxPayload:
		return fmt.Errorf("--max-frame %d: want 65536 to %d", f.maxFrame, protocol.MaxPayload)
	case f.maxSessions < 1 || f.maxSessions > maxSessionsLimit:
		return fmt.Errorf("--max-sessions %d: want 1 to %d", f.maxSessions, maxSessionsLimit)
	case f.maxSessionsUID < 1 || f.maxPending < 1 || f.maxPendingPeer < 1:
		return fmt.Errorf("--max-sessions-per-uid %d, --max-pending %d, --max-pending-per-uid %d: want at least 1 each",
			f.maxSessionsUID, f.maxPending, f.maxPendingPeer)
	case f.keepBuffer < 4<<10 || f.keepBuffer > 64<<20:
		return fmt.Errorf("--keep-buffer %d: want 4096 to %d", f.keepBuffer, 64<<20)
	case f.maxKept < 1:
		return fmt.Errorf("--max-kept %d: want at least 1", f.maxKept)
	case f.maxKeptPerUID < 1:
		return fmt.Errorf("--max-kept-per-uid %d: want at least 1", f.maxKeptPerUID)
	case f.scrollback < 0 || f.scrollback > 10000:
		return fmt.Errorf("--screen-scrollback %d: want 0 to 10000", f.scrollback)
	}
	return nil
}

// checkPeers checks the ids of the peers admitted, which the kernel
// reports in 32 bits, and resolves --socket-group.
func (f *serveFlags) checkPeers() error {
	for _, ids := range []struct {
		flag string
		ids  []uint
	}{{"--allow-uid", f.allowUIDs}, {"--allow-uid-as-any", f.trustUIDs}, {"--allow-cid", f.allowCIDs}} {
		for _, id := range ids.ids {
			if id > math.MaxUint32 {
				return fmt.Errorf("%s %d: want at most %d", ids.flag, id, uint32(math.MaxUint32))
			}
		}
	}
	if f.socketGroup != "" {
		gid, err := lookupGroup(f.socketGroup)
		if err != nil {
			return fmt.Errorf("--socket-group: %w", err)
		}
		f.socketGID = &gid
	}
	return nil
}

// config is the agent's configuration the flags give, logging to log.
func (f *serveFlags) config(log *slog.Logger) agent.Config {
	cfg := agent.Config{
		Logger:            log,
		Software:          "corkd " + version,
		HandshakeTimeout:  f.handshake,
		DisconnectGrace:   f.grace,
		MaxSessions:       f.maxSessions,
		MaxSessionsPerUID: f.maxSessionsUID,
		MaxPending:        f.maxPending,
		MaxPendingPerPeer: f.maxPendingPeer,
		MaxFrame:          f.maxFrame,
		MaxKept:           f.maxKept,
		MaxKeptPerUID:     f.maxKeptPerUID,
		KeepBuffer:        f.keepBuffer,
		Linger:            f.linger,
		ScreenScrollback:  f.scrollback,
		Forward:           f.forward,
	}
	if f.scrollback == 0 {
		cfg.ScreenScrollback = -1 // none, not the default
	}
	if f.linger == 0 {
		cfg.Linger = -1 // forever
	}
	if f.stdio {
		cfg.KeptVia = keptVia(f.keepSocket, f.logLevel, log)
	} else if f.forward.Mode != agent.ForwardNone {
		cfg.ForwardWorker = forwardWorker(f.logLevel, log)
	}
	return cfg
}

// listenOptions are the listeners' options the flags give, logging to log.
func (f *serveFlags) listenOptions(log *slog.Logger) listen.Options {
	opts := listen.Options{Logger: log, SocketGroup: f.socketGID}
	for _, u := range f.allowUIDs {
		opts.AllowUIDs = append(opts.AllowUIDs, uint32(u))
	}
	for _, u := range f.trustUIDs {
		opts.TrustUIDs = append(opts.TrustUIDs, uint32(u))
	}
	for _, c := range f.allowCIDs {
		opts.AllowCIDs = append(opts.AllowCIDs, uint32(c))
	}
	return opts
}
