// Package listen opens the listeners corkd serves on, named by URL, each
// filtering its peers before a connection reaches the agent.
package listen

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/corkvm/cork/protocol"
)

// Options filter peers.
type Options struct {
	// AllowUIDs are the peer uids a unix socket accepts (SO_PEERCRED).
	// Empty: root only.
	AllowUIDs []uint32
	// AllowCIDs are the peer context ids a vsock listener accepts.
	// Empty: the host (CID 2) only.
	AllowCIDs []uint32
	Logger    *slog.Logger
}

// Listen opens the listener addr names:
//
//	unix:///run/corkd.sock   a unix socket, mode 0600, peers by uid
//	vsock://:PORT            AF_VSOCK on any local CID, peers by CID
//	serial:///dev/virtio-ports/NAME
//	                         a virtio-serial port (or any stream device):
//	                         sessions one after another
func Listen(addr string, opts Options) (net.Listener, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	u, err := url.Parse(addr)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: %v", addr, err)
	}
	switch u.Scheme {
	case "unix":
		if u.Path == "" {
			return nil, fmt.Errorf("listen address %q: no socket path (want unix:///path)", addr)
		}
		return listenUnix(u.Path, opts)
	case "vsock":
		port := uint32(protocol.DefaultVsockPort)
		if p := u.Port(); p != "" {
			n, err := strconv.ParseUint(p, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("listen address %q: bad port %q", addr, p)
			}
			port = uint32(n)
		}
		if h := u.Hostname(); h != "" {
			return nil, fmt.Errorf("listen address %q: corkd binds any CID (the CID can change); write vsock://:%d", addr, port)
		}
		return listenVsock(port, opts)
	case "serial":
		if u.Path == "" {
			return nil, fmt.Errorf("listen address %q: no device path (want serial:///dev/virtio-ports/NAME)", addr)
		}
		return listenSerial(u.Path, opts)
	case "":
		return nil, fmt.Errorf("listen address %q: no scheme (want unix:///path, vsock://:PORT or serial:///path)", addr)
	}
	return nil, fmt.Errorf("listen address %q: unknown scheme %q (want unix, vsock or serial)", addr, u.Scheme)
}

func listenUnix(path string, opts Options) (net.Listener, error) {
	// A socket left by an earlier corkd would make bind fail; anything
	// else at the path is not ours to remove.
	if st, err := os.Lstat(path); err == nil && st.Mode()&os.ModeSocket != 0 {
		os.Remove(path)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	allow := opts.AllowUIDs
	if len(allow) == 0 {
		allow = []uint32{0}
	}
	// The socket's mode keeps others out already; the check also covers a
	// socket exposed through a proxy or a changed mode.
	return &peerFilter{Listener: l, log: opts.Logger, refuse: func(c net.Conn) (string, []any) {
		cred, err := peerCred(c)
		if err != nil {
			return "refused unix peer: no credentials", []any{"err", err}
		}
		if !slices.Contains(allow, cred.Uid) {
			return "refused unix peer", []any{"uid", cred.Uid, "pid", cred.Pid}
		}
		return "", nil
	}}, nil
}

func peerCred(c net.Conn) (*unix.Ucred, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, errors.New("not a unix socket")
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, cerr
}
