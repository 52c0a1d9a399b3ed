package listen

import (
	"log/slog"
	"net"
	"slices"

	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"
)

// listenVsock binds CID ANY, never the CID read at start: a VM's CID can
// change (on snapshot restore, for one), and a listener bound to the old one
// would stop accepting.
func listenVsock(port uint32, opts Options) (net.Listener, error) {
	l, err := vsock.ListenContextID(unix.VMADDR_CID_ANY, port, nil)
	if err != nil {
		return nil, err
	}
	allow := opts.AllowCIDs
	if len(allow) == 0 {
		allow = []uint32{vsock.Host}
	}
	return &cidListener{Listener: l, allow: allow, log: opts.Logger}, nil
}

// cidListener accepts only peers whose context id is allowed (lesson 11):
// by default the host, never another VM on the same hypervisor.
type cidListener struct {
	net.Listener
	allow []uint32
	log   *slog.Logger
}

func (l *cidListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		a, ok := c.RemoteAddr().(*vsock.Addr)
		if !ok {
			l.log.Warn("refused vsock peer: unknown address", "peer", c.RemoteAddr().String())
			c.Close()
			continue
		}
		if !slices.Contains(l.allow, a.ContextID) {
			l.log.Warn("refused vsock peer", "cid", a.ContextID, "port", a.Port, "allowed", l.allow)
			c.Close()
			continue
		}
		return c, nil
	}
}
