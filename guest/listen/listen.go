// Package listen opens the listeners corkd serves on, named by URL, each
// filtering its peers before a connection reaches the agent.
package listen

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"

	"github.com/corkvm/cork/protocol"
)

// Options filter peers.
type Options struct {
	// AllowUIDs are the peer uids a unix socket admits (SO_PEERCRED)
	// besides root and corkd's own uid. Their sessions run only as
	// themselves.
	AllowUIDs []uint32
	// TrustUIDs are admitted like AllowUIDs, and their sessions may run as
	// any user, as root's and corkd's own uid's may.
	TrustUIDs []uint32
	// SocketGroup, when not nil, is the group that may open a unix
	// socket: it is made mode 0660 with this group. Without it the socket
	// is mode 0600, owned by root, or by the one uid admitted besides
	// root.
	SocketGroup *uint32
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
