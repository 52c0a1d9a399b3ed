package listen

import (
	"log/slog"
	"net"
)

// peerFilter accepts only the peers that refuse lets through. A refused
// peer is logged with what refuse says about it, closed, and never reaches
// the agent.
type peerFilter struct {
	net.Listener
	// refuse returns "" for an allowed peer, else a message and the
	// attributes to log it with.
	refuse func(net.Conn) (string, []any)
	log    *slog.Logger
}

func (l *peerFilter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if msg, attrs := l.refuse(c); msg != "" {
			l.log.Warn(msg, attrs...)
			c.Close()
			continue
		}
		return c, nil
	}
}
