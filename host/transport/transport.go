// Package transport opens the stream a cork session runs over: a socket
// named by URL, or corkd started in-band by `smolvm machine exec`.
package transport

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"time"
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
	case "":
		return nil, fmt.Errorf("address %q: no scheme (want unix:///path)", addr)
	}
	return nil, fmt.Errorf("address %q: unknown scheme %q (want unix)", addr, u.Scheme)
}

// unwrapOp drops net.OpError's repetition of the address.
func unwrapOp(err error) error {
	if oe, ok := err.(*net.OpError); ok && oe.Err != nil {
		return oe.Err
	}
	return err
}
