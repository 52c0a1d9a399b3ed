package agent

import (
	"fmt"
	"io"
	"net"
	"strconv"

	"github.com/mdlayher/vsock"

	"github.com/corkvm/cork/guest/account"
	"github.com/corkvm/cork/protocol"
)

// Peer is who is at the other end of a connection, as its listener
// established it.
type Peer struct {
	// UID is the peer's uid, when HasUID: a unix socket tells it
	// (SO_PEERCRED); vsock, serial ports and stdio do not.
	UID    uint32
	HasUID bool
	// AsAny is whether the peer's sessions may run as any user. The host
	// (vsock, serial, stdio) and, on a unix socket, root, corkd's own uid
	// and uids trusted with --allow-uid-as-any may; a uid admitted with
	// --allow-uid runs sessions only as itself.
	AsAny bool
}

// PeerConn is implemented by connections that know their peer's uid
// (listen.PeerConn). A connection that does not is the host's.
type PeerConn interface {
	Peer() (uid uint32, asAny bool)
}

// peerName names the peer of c for the limits per peer and for logs: by
// uid on a unix socket (PeerConn), by CID on vsock, by the port's name on a
// serial port; a connection that is no socket is "stdio".
func peerName(c io.ReadWriteCloser) string {
	if pc, ok := c.(PeerConn); ok {
		uid, _ := pc.Peer()
		return fmt.Sprintf("uid %d", uid)
	}
	nc, ok := c.(net.Conn)
	if !ok {
		return "stdio"
	}
	a := nc.RemoteAddr()
	if va, ok := a.(*vsock.Addr); ok {
		return fmt.Sprintf("vsock cid %d", va.ContextID)
	}
	if a == nil || a.String() == "" {
		return nc.LocalAddr().Network() // an unnamed unix socket
	}
	return a.Network() + " " + a.String()
}

func peerOf(c io.ReadWriteCloser) Peer {
	if pc, ok := c.(PeerConn); ok {
		uid, asAny := pc.Peer()
		return Peer{UID: uid, HasUID: true, AsAny: asAny}
	}
	return Peer{AsAny: true}
}

// confinedAccount resolves the account of a peer that may run sessions only
// as itself: its uid's first passwd entry (getpwuid's), when user is empty,
// that entry's name or the uid; a refusal naming the flag that would allow
// more when user is anyone else. Another entry with the same uid is refused
// too: it can carry other groups (root's, shadow), and a peer must not pick
// its groups by naming it.
func confinedAccount(user string, peer Peer) (*account.Account, *protocol.Error) {
	uid := strconv.FormatUint(uint64(peer.UID), 10)
	own, err := account.ByUID(peer.UID)
	if err != nil {
		return nil, &protocol.Error{Kind: protocol.KindUser, Message: err.Error()}
	}
	if user == "" || user == own.Name || user == uid {
		return own, nil
	}
	who := uid
	if own.Name != who {
		who += " (" + own.Name + ")"
	}
	if acct, err := account.Lookup(user); err == nil && acct.UID == peer.UID {
		return nil, &protocol.Error{Kind: protocol.KindUser, Message: fmt.Sprintf(
			"uid %s may run sessions only as its own passwd entry %q, not as user %q, another entry for the same uid "+
				"(with its own groups): corkd admits it with --allow-uid; --allow-uid-as-any %d would let it run as any user",
			who, own.Name, user, peer.UID)}
	}
	return nil, &protocol.Error{Kind: protocol.KindUser, Message: fmt.Sprintf(
		"uid %s may run sessions only as itself, not as user %q: corkd admits it with --allow-uid; "+
			"--allow-uid-as-any %d would let it run as any user", who, user, peer.UID)}
}
