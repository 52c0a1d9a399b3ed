package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/corkvm/cork/host/client"
	"github.com/corkvm/cork/host/term"
	"github.com/corkvm/cork/protocol"
)

const forwardUsage = `usage: cork forward [flags] LOCAL:REMOTE...
  Carries connections to a host port or socket to one in the guest, as
  ssh -L and kubectl port-forward do, until interrupted:
    cork forward 8080:80            host 127.0.0.1:8080 -> guest 127.0.0.1:80
    cork forward 5173               the same port on both sides
    cork forward 8080:db:5432       host 127.0.0.1:8080 -> db:5432, dialled in the guest
    cork forward /tmp/db.sock:/run/postgresql/.s.PGSQL.5432   unix sockets
  The guest's side connects as the user (-u): a socket the user may not
  open is refused with the guest's message.
  -R GUESTPORT:HOSTADDR:PORT goes the other way, as ssh -R: corkd listens on
  the guest's loopback (it needs corkd serve --forwarding=all) and cork
  connects to HOSTADDR:PORT on the host for each connection made there.
  Either side may be a unix socket's path: -R /run/x.sock:5000 has corkd
  make the socket, as the user and mode 0600; -R 9000:/tmp/x.sock
  connects to the host's socket.
  --auto follows the ports the guest's programs listen on (the user's, or
  everyone's for root), as lima does: each gets the same port on the host
  when it is free, the next free one otherwise, and goes when it closes.
`

// remoteSpec is one -R GUEST:HOST.
type remoteSpec struct {
	port     uint16 // the guest's port, when path is empty
	path     string // the guest's unix socket
	hostNet  string // "tcp" or "unix"
	host     string // host:port or a path, dialled on the host
	guestFor string // the guest's side, as printed
}

// parseRemote parses -R GUEST:HOST as ssh does: GUEST a port or a unix
// socket's path (absolute), HOST HOSTADDR:PORT, a port of the host's
// 127.0.0.1, or a unix socket's path. The guest's path ends at its first
// colon; the host's takes the rest.
func parseRemote(spec string) (*remoteSpec, error) {
	bad := func(why string) error {
		return fmt.Errorf("-R %q: %s (want GUEST:HOST, for example 9000:127.0.0.1:5000, 9000:5000, /run/x.sock:5000 or 9000:/tmp/x.sock)", spec, why)
	}
	guest, host, ok := strings.Cut(spec, ":")
	if !ok {
		return nil, bad("no host side")
	}
	r := &remoteSpec{guestFor: guest}
	switch {
	case strings.HasPrefix(guest, "/"):
		r.path = guest
	case isPort(guest):
		port, _ := strconv.ParseUint(guest, 10, 16)
		r.port = uint16(port)
	default:
		return nil, bad(fmt.Sprintf("the guest side %q is neither a port nor an absolute path", guest))
	}
	r.hostNet, r.host = "tcp", host
	switch {
	case strings.HasPrefix(host, "/"):
		r.hostNet = "unix"
	case isPort(host) && host != "0":
		r.host = net.JoinHostPort("127.0.0.1", host)
	default:
		if h, p, err := net.SplitHostPort(host); err != nil || h == "" || !isPort(p) || p == "0" {
			return nil, bad(fmt.Sprintf("the host side %q is neither a port, HOSTADDR:PORT nor an absolute path", host))
		}
	}
	return r, nil
}

// listen asks fw for r's guest listener, whose connections are carried to
// dial, and returns the guest's address.
func (r *remoteSpec) listen(fw *client.Forwarder, dial func() (net.Conn, error)) (string, error) {
	if r.path != "" {
		return fw.ListenUnix(r.path, dial)
	}
	return fw.Listen(r.port, dial)
}

// forwardSpec is one LOCAL:REMOTE.
type forwardSpec struct {
	localNet, local   string // "tcp" or "unix"; host:port or a path
	remoteNet         uint8  // protocol.NetTCP or protocol.NetUnix
	remote, remoteFor string // the address the guest dials; as printed
}

// parseForward parses LOCAL:REMOTE, PORT or LOCAL:HOST:PORT. A side that
// starts with / is a unix socket's path.
func parseForward(spec, address string) (*forwardSpec, error) {
	bad := func(why string) error {
		return fmt.Errorf("forward %q: %s (want LOCAL:REMOTE, for example 8080:80, 5173 or /tmp/db.sock:/run/db.sock)", spec, why)
	}
	local, remote, ok := strings.Cut(spec, ":")
	if !ok {
		local, remote = spec, spec
	}
	f := &forwardSpec{}
	switch {
	case strings.HasPrefix(local, "/"):
		f.localNet, f.local = "unix", local
	case isPort(local):
		f.localNet, f.local = "tcp", net.JoinHostPort(address, local)
	default:
		return nil, bad(fmt.Sprintf("the local side %q is neither a port nor an absolute path", local))
	}
	switch {
	case strings.HasPrefix(remote, "/"):
		f.remoteNet, f.remote, f.remoteFor = protocol.NetUnix, remote, remote
	case isPort(remote) && remote != "0":
		f.remoteNet, f.remote, f.remoteFor = protocol.NetTCP, net.JoinHostPort("127.0.0.1", remote), remote
	default:
		host, port, err := net.SplitHostPort(remote)
		if err != nil || host == "" || !isPort(port) || port == "0" {
			return nil, bad(fmt.Sprintf("the guest side %q is neither a port, HOST:PORT nor an absolute path", remote))
		}
		f.remoteNet, f.remote, f.remoteFor = protocol.NetTCP, remote, remote
	}
	return f, nil
}

func isPort(s string) bool {
	n, err := strconv.ParseUint(s, 10, 16)
	return err == nil && n <= 65535 && s != "" && s[0] != '+'
}

// listen opens the host's side of f. A unix socket is made for its owner
// alone (0600), as ssh makes one; one that exists already is not replaced.
func (f *forwardSpec) listen() (net.Listener, error) {
	if f.localNet == "unix" {
		return listenUnixPrivate(f.local)
	}
	return net.Listen(f.localNet, f.local)
}

// umaskMu is held while listenUnixPrivate has changed the process's umask.
var umaskMu sync.Mutex

// listenUnixPrivate makes a unix socket at path with mode 0600 from the
// start, as ssh's umask of 0177 around its bind does: a chmod after the
// bind would leave a moment in which anyone the umask lets in may connect.
// The umask is the process's, and cork makes no other files meanwhile.
func listenUnixPrivate(path string) (net.Listener, error) {
	umaskMu.Lock()
	defer umaskMu.Unlock()
	old := syscall.Umask(0o177)
	defer syscall.Umask(old)
	return net.Listen("unix", path)
}

func forwardMain(args []string) int {
	var t target
	var user, address string
	var remotes []string
	var auto bool
	var autoPorts, autoIgnore string
	fs := pflag.NewFlagSet("cork forward", pflag.ContinueOnError)
	fs.BoolVar(&auto, "auto", false, "follow the guest's listening TCP ports, as lima does")
	fs.StringVar(&autoPorts, "auto-ports", "1024-65535", "with --auto, carry only these guest `PORTS` (PORT or FROM-TO, comma-separated)")
	fs.StringVar(&autoIgnore, "auto-ignore", "", "with --auto, never carry these guest `PORTS`")
	fs.StringArrayVarP(&remotes, "remote", "R", nil, "listen in the guest, carried to the host, as ssh -R: `GUEST:HOST`, GUEST a port or a socket's path, HOST a port, HOSTADDR:PORT or a socket's path (repeatable)")
	t.flags(fs)
	fs.StringVarP(&user, "user", "u", "", "connect in the guest as `NAME|UID` (default: corkd's own user)")
	fs.StringVar(&address, "address", "127.0.0.1", "host `ADDR` to listen on for ports (0.0.0.0 lets other machines in)")
	fs.Usage = func() { fmt.Fprintf(os.Stderr, "%s%s", forwardUsage, fs.FlagUsages()) }
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() == 0 && len(remotes) == 0 && !auto {
		fs.Usage()
		return ExitCorkError
	}
	var specs []*forwardSpec
	for _, a := range fs.Args() {
		f, err := parseForward(a, address)
		if err != nil {
			return fail("%v", err)
		}
		specs = append(specs, f)
	}
	var rspecs []*remoteSpec
	for _, a := range remotes {
		r, err := parseRemote(a)
		if err != nil {
			return fail("%v", err)
		}
		rspecs = append(rspecs, r)
	}
	var af *autoForwards
	if auto {
		var err error
		if af, err = newAutoForwards(address, autoPorts, autoIgnore); err != nil {
			return fail("%v", err)
		}
	} else if fs.Changed("auto-ports") || fs.Changed("auto-ignore") {
		return fail("forward: --auto-ports and --auto-ignore are rules for --auto: add it")
	}
	if os.Getenv("GOMAXPROCS") == "" {
		// One P, as corkd's forwarding workers have: with a P idle, Go
		// wakes a second thread for nearly every socket event, and one
		// thread keeps up with the copying (docs/benchmarks.md).
		runtime.GOMAXPROCS(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runForwards(ctx, &t, user, specs, rspecs, af)
}

// runForwards listens for every spec and carries their connections until
// ctx ends or the connection to corkd does.
func runForwards(ctx context.Context, t *target, user string, specs []*forwardSpec, remotes []*remoteSpec, auto *autoForwards) int {
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	for _, f := range specs {
		l, err := f.listen()
		if err != nil {
			return fail("forward: %v", err)
		}
		listeners = append(listeners, l)
	}
	conn, smolvmErr, err := t.dial(ctx)
	if err != nil {
		return fail("%v", err)
	}
	// Closing the connection is what ends a wait for corkd's answers (the
	// hello, the Forward, each Listen) when the operator interrupts it.
	defer context.AfterFunc(ctx, func() { conn.Close() })()
	start := client.Forward
	if auto != nil {
		start = client.ForwardWatching
	}
	fw, err := start(conn, "cork "+Version, user)
	if err != nil {
		if ctx.Err() != nil {
			return fail("forward: interrupted while waiting for corkd")
		}
		reportSmolvm(smolvmErr)
		return fail("forward: %v", err)
	}
	defer fw.Close()
	if auto != nil {
		auto.fw = fw
		defer auto.close()
		fw.WatchPorts(auto.apply)
	}
	for i, f := range specs {
		l := listeners[i]
		fmt.Printf("Forwarding from %s -> %s\n", l.Addr(), f.remoteFor)
		go fw.Serve(l, f.remoteNet, f.remote, func(err error) {
			say("forward %s -> %s: %v", l.Addr(), f.remoteFor, err) // the guest's reason, made printable
		})
	}
	for _, r := range remotes {
		addr, err := r.listen(fw, func() (net.Conn, error) {
			c, err := net.DialTimeout(r.hostNet, r.host, 10*time.Second)
			if err != nil {
				fmt.Fprintf(os.Stderr, "cork: forward guest %s -> %s: %v\n", r.guestFor, r.host, err)
			}
			return c, err
		})
		if ctx.Err() != nil {
			return fail("forward: interrupted while waiting for corkd")
		}
		if err != nil {
			return fail("forward -R %s:%s: %v", r.guestFor, r.host, err)
		}
		fmt.Printf("Forwarding from guest %s -> %s\n", term.Printable(addr), r.host)
	}
	select {
	case <-ctx.Done():
		return 0
	case <-fw.Done():
		err := fw.Err()
		reportSmolvm(smolvmErr)
		if errors.Is(err, net.ErrClosed) {
			err = errors.New("closed")
		}
		return fail("forward: the connection to corkd ended: %v", err)
	}
}

// reportSmolvm names the smolvm process's failure, when there is one.
func reportSmolvm(smolvmErr func() error) {
	if smolvmErr == nil {
		return
	}
	if err := smolvmErr(); err != nil {
		fmt.Fprintf(os.Stderr, "cork: %v\n", err)
	}
}
