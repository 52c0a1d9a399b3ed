package listen

import (
	"log/slog"
	"net"
)

// peerFilter accepts only the peers that admit lets through. A refused
// peer is logged with what admit says about it, closed, and never reaches
// the agent.
type peerFilter struct {
	net.Listener
	// admit returns the connection to hand the agent (c itself, or c with
	// what the listener learnt about its peer), or a refusal message and
	// the attributes to log it with.
	admit func(c net.Conn) (admitted net.Conn, refusal string, attrs []any)
	log   *slog.Logger
}

var _ net.Listener = (*peerFilter)(nil)

func (l *peerFilter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		admitted, msg, attrs := l.admit(c)
		if msg != "" {
			l.log.Warn(msg, attrs...)
			c.Close()
			continue
		}
		return admitted, nil
	}
}

// SetUnlinkOnClose is net.UnixListener's, for a unix socket's filter: a
// corkd that no longer owns its socket's path closes without removing it.
func (l *peerFilter) SetUnlinkOnClose(unlink bool) {
	if u, ok := l.Listener.(*net.UnixListener); ok {
		u.SetUnlinkOnClose(unlink)
	}
}
