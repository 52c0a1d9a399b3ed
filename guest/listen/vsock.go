package listen

import (
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
	// Only allowed peers: by default the host, never another VM on the same
	// hypervisor (lima filters vsock peers by CID for the same reason).
	return &peerFilter{Listener: l, log: opts.Logger, admit: func(c net.Conn) (net.Conn, string, []any) {
		a, ok := c.RemoteAddr().(*vsock.Addr)
		if !ok {
			return nil, "refused vsock peer: unknown address", []any{"peer", c.RemoteAddr().String()}
		}
		if !slices.Contains(allow, a.ContextID) {
			return nil, "refused vsock peer", []any{"cid", a.ContextID, "port", a.Port, "allowed", allow}
		}
		return c, "", nil
	}}, nil
}
