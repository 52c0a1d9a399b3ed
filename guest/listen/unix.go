package listen

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"

	"golang.org/x/sys/unix"
)

// A unix socket admits peers by uid (SO_PEERCRED) and tells the agent who
// each one is, so that a uid admitted with Options.AllowUIDs runs sessions
// only as itself: admitting a uid must not hand it root in the guest.

// PeerConn is an accepted unix socket connection and the peer's
// credentials, read when it was accepted.
type PeerConn struct {
	*net.UnixConn
	uid   uint32
	asAny bool
}

// Peer reports the peer's uid and whether its sessions may run as any user
// (root, corkd's own uid and Options.TrustUIDs) or only as itself.
func (c *PeerConn) Peer() (uid uint32, asAny bool) { return c.uid, c.asAny }

var _ net.Conn = (*PeerConn)(nil)

// umaskMu serialises the umask change around bind, which is process-wide.
var umaskMu sync.Mutex

func listenUnix(path string, opts Options) (net.Listener, error) {
	self := uint32(os.Geteuid())
	trusted := append([]uint32{0, self}, opts.TrustUIDs...)
	var others []uint32 // admitted uids that the socket's mode must let in
	for _, uid := range append(slices.Clone(opts.AllowUIDs), opts.TrustUIDs...) {
		if uid != 0 && uid != self && !slices.Contains(others, uid) {
			others = append(others, uid)
		}
	}
	owner, group, mode := -1, -1, os.FileMode(0o600)
	switch {
	case opts.SocketGroup != nil:
		group, mode = int(*opts.SocketGroup), 0o660
	case len(others) == 1:
		owner = int(others[0])
	case len(others) > 1:
		return nil, fmt.Errorf("unix socket %s: %d uids are admitted (%v) but a socket has one owner: "+
			"give --socket-group GROUP, a group they share, and the socket is made mode 0660 for it", path, len(others), others)
	}

	// A socket left by an earlier corkd would make bind fail; anything
	// else at the path is not ours to remove, nor is a socket a live
	// corkd still listens on.
	if st, err := os.Lstat(path); err == nil && st.Mode()&os.ModeSocket != 0 {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("unix socket %s: another process is listening on it", path)
		}
		os.Remove(path)
	}
	// bind creates the file with the umask's mode: keep it private until
	// its owner and mode are set.
	umaskMu.Lock()
	old := unix.Umask(0o177)
	l, err := net.Listen("unix", path)
	unix.Umask(old)
	umaskMu.Unlock()
	if err != nil {
		return nil, err
	}
	if owner >= 0 || group >= 0 {
		if err := os.Chown(path, owner, group); err != nil {
			l.Close()
			return nil, fmt.Errorf("unix socket %s: giving it to uid %d gid %d: %w", path, owner, group, errors.Unwrap(err))
		}
	}
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return nil, err
	}
	// The socket's mode keeps others out already; the check also covers a
	// socket exposed through a proxy or a changed mode.
	return &peerFilter{Listener: l, log: opts.Logger, admit: func(c net.Conn) (net.Conn, string, []any) {
		uc, ok := c.(*net.UnixConn)
		if !ok {
			return nil, "refused unix peer: not a unix socket", nil
		}
		cred, err := PeerCred(uc)
		if err != nil {
			return nil, "refused unix peer: no credentials", []any{"err", err}
		}
		asAny := slices.Contains(trusted, cred.Uid)
		if !asAny && !slices.Contains(opts.AllowUIDs, cred.Uid) {
			return nil, "refused unix peer", []any{"uid", cred.Uid, "pid", cred.Pid}
		}
		return &PeerConn{UnixConn: uc, uid: cred.Uid, asAny: asAny}, "", nil
	}}, nil
}

// PeerCred returns the credentials of the process that connected uc, as
// the kernel recorded them at connect (SO_PEERCRED).
func PeerCred(uc *net.UnixConn) (*unix.Ucred, error) {
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
