// Package transport opens the stream a cork session runs over: a socket
// named by URL, or corkd started in-band by `smolvm machine exec`.
package transport

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/mdlayher/vsock"

	"github.com/corkvm/cork/protocol"
)

// Options tune Dial.
type Options struct {
	// Timeout bounds connecting, retries included.
	Timeout time.Duration
}

// Dial connects to the corkd that addr names:
//
//	unix:///path          a unix socket: corkd's own, smolvm's --expose-socket
//	                      host path, or a QEMU chardev wired to a virtio-serial port
//	vsock://CID:PORT      AF_VSOCK (QEMU vhost-vsock); PORT defaults to 2675
//	hvsock:///path:PORT   Firecracker or cloud-hypervisor hybrid vsock: the VMM's
//	                      unix socket and the guest port (default 2675)
func Dial(ctx context.Context, addr string, opts Options) (io.ReadWriteCloser, error) {
	u, err := url.Parse(addr)
	if err != nil {
		return nil, fmt.Errorf("address %q: %v", addr, err)
	}
	if opts.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.Timeout)
		defer cancel()
	}
	switch u.Scheme {
	case "unix":
		if u.Path == "" {
			return nil, fmt.Errorf("address %q: no socket path (want unix:///path)", addr)
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", u.Path)
		if err != nil {
			return nil, fmt.Errorf("connecting to corkd at %s: %w", u.Path, unwrapOp(err))
		}
		return c, nil
	case "vsock":
		cid, err := strconv.ParseUint(u.Hostname(), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("address %q: bad context id %q (want vsock://CID:PORT)", addr, u.Hostname())
		}
		port, err := portOf(u.Port())
		if err != nil {
			return nil, fmt.Errorf("address %q: %v", addr, err)
		}
		c, err := vsock.DialContext(ctx, uint32(cid), port, nil)
		if err != nil {
			return nil, fmt.Errorf("connecting to corkd at vsock CID %d port %d: %w", cid, port, unwrapOp(err))
		}
		return c, nil
	case "hvsock":
		path, p := u.Path, ""
		if i := strings.LastIndexByte(path, ':'); i >= 0 {
			path, p = path[:i], path[i+1:]
		}
		if path == "" {
			return nil, fmt.Errorf("address %q: no socket path (want hvsock:///path/to/v.sock:PORT)", addr)
		}
		port, err := portOf(p)
		if err != nil {
			return nil, fmt.Errorf("address %q: %v", addr, err)
		}
		return DialHybrid(ctx, path, port)
	case "":
		return nil, fmt.Errorf("address %q: no scheme (want unix:///path, vsock://CID:PORT or hvsock:///path:PORT)", addr)
	}
	return nil, fmt.Errorf("address %q: unknown scheme %q (want unix, vsock or hvsock)", addr, u.Scheme)
}

func portOf(s string) (uint32, error) {
	if s == "" {
		return protocol.DefaultVsockPort, nil
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("bad port %q", s)
	}
	return uint32(n), nil
}

// unwrapOp drops net.OpError's repetition of the address.
func unwrapOp(err error) error {
	if oe, ok := err.(*net.OpError); ok && oe.Err != nil {
		return oe.Err
	}
	return err
}
