package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// ErrHybridReply is wrapped by the error for a reply to CONNECT that is not
// "OK <number>\n": something other than a hybrid vsock socket answered.
var ErrHybridReply = errors.New("unexpected reply to CONNECT")

// maxHybridReply bounds the reply line; "OK 4294967295\n" is 14 bytes.
const maxHybridReply = 32

// DialHybrid connects to a guest port through Firecracker's or
// cloud-hypervisor's hybrid vsock: the host side is a unix socket, and
// "CONNECT PORT\n" asks the VMM to forward to the guest's PORT. While the
// guest is not listening yet (the VMM closes the connection, or the socket
// does not exist yet) it retries with backoff until ctx is done.
func DialHybrid(ctx context.Context, path string, port uint32) (net.Conn, error) {
	backoff := 10 * time.Millisecond
	for {
		c, err := tryHybrid(ctx, path, port)
		if err == nil {
			return c, nil
		}
		if errors.Is(err, ErrHybridReply) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("hybrid vsock %s port %d: no guest answered in time (last attempt: %v)", path, port, err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

func tryHybrid(ctx context.Context, path string, port uint32) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, unwrapOp(err)
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	if _, err := fmt.Fprintf(c, "CONNECT %d\n", port); err != nil {
		c.Close()
		return nil, err
	}
	// One byte at a time: whatever follows the newline is the guest's,
	// and a buffered reader would swallow it (u-root/cpu PR #203).
	var line []byte
	b := make([]byte, 1)
	for {
		if _, err := c.Read(b); err != nil {
			c.Close()
			return nil, fmt.Errorf("connection closed before the reply to CONNECT %d (%v)", port, err)
		}
		if b[0] == '\n' {
			break
		}
		if line = append(line, b[0]); len(line) > maxHybridReply {
			c.Close()
			return nil, fmt.Errorf("%w %d: %q (cut)", ErrHybridReply, port, line)
		}
	}
	reply := string(line)
	num, ok := strings.CutPrefix(reply, "OK ")
	if _, err := strconv.ParseUint(num, 10, 32); !ok || err != nil {
		c.Close()
		return nil, fmt.Errorf("%w %d: %q", ErrHybridReply, port, reply)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}
