package procfs

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// TCPSocket is one socket of the kernel's TCP tables, /proc/net/tcp and
// /proc/net/tcp6.
type TCPSocket struct {
	Local, Remote netip.AddrPort
	State         uint8 // as the kernel numbers them: TCPEstablished, TCPListen, ...
	UID           uint32
	// Inode is the socket's inode, 0 once no process holds the socket
	// (closed, waiting out TIME_WAIT or sending its last data): UID is
	// then not its maker's (a time-wait socket shows 0).
	Inode uint64
}

// TCP states, as the tables number them.
const (
	TCPEstablished = 0x01
	TCPListen      = 0x0A
)

// ScanTCP calls fn with each socket of the table r, in the format of
// /proc/net/tcp and tcp6, until fn returns false. A line it cannot parse
// is skipped.
func ScanTCP(r io.Reader, fn func(TCPSocket) bool) error {
	sc := bufio.NewScanner(r)
	sc.Scan() // the header
	for sc.Scan() {
		s, ok := parseTCPLine(sc.Text())
		if ok && !fn(s) {
			return nil
		}
	}
	return sc.Err()
}

// parseTCPLine parses one line of a table:
//
//	sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
func parseTCPLine(line string) (TCPSocket, bool) {
	f := strings.Fields(line)
	if len(f) < 10 {
		return TCPSocket{}, false
	}
	var s TCPSocket
	var err1, err2 error
	s.Local, err1 = parseAddrPort(f[1])
	s.Remote, err2 = parseAddrPort(f[2])
	st, err3 := strconv.ParseUint(f[3], 16, 8)
	uid, err4 := strconv.ParseUint(f[7], 10, 32)
	ino, err5 := strconv.ParseUint(f[9], 10, 64)
	if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
		return TCPSocket{}, false
	}
	s.State, s.UID, s.Inode = uint8(st), uint32(uid), ino
	return s, true
}

// parseAddrPort parses ADDR:PORT as the tables print them: the address
// as 32-bit words, each in the kernel's byte order, the port plain, both
// in hex.
func parseAddrPort(s string) (netip.AddrPort, error) {
	addr, port, ok := strings.Cut(s, ":")
	p, err := strconv.ParseUint(port, 16, 16)
	if !ok || err != nil || (len(addr) != 8 && len(addr) != 32) {
		return netip.AddrPort{}, fmt.Errorf("address %q", s)
	}
	raw, err := hex.DecodeString(addr)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q", s)
	}
	for i := 0; i < len(raw); i += 4 {
		binary.NativeEndian.PutUint32(raw[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	ip, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(ip, uint16(p)), nil
}

// ErrNoTCPSocket is FindTCP's error when no socket matches.
var ErrNoTCPSocket = errors.New("no such TCP socket")

// FindTCP returns the socket of /proc/net/tcp or tcp6 whose local address
// is local and whose remote address is remote. An IPv6 socket connected to
// an IPv4 address, which tcp6 lists with IPv4-mapped addresses, is found
// by its IPv4 ones.
func FindTCP(local, remote netip.AddrPort) (TCPSocket, error) {
	local, remote = unmap(local), unmap(remote)
	var found TCPSocket
	ok := false
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(table)
		if err != nil {
			if os.IsNotExist(err) && table != "/proc/net/tcp" {
				continue // no IPv6 in this kernel
			}
			return TCPSocket{}, err
		}
		err = ScanTCP(f, func(s TCPSocket) bool {
			ok = unmap(s.Local) == local && unmap(s.Remote) == remote
			found = s
			return !ok
		})
		f.Close()
		if err != nil {
			return TCPSocket{}, err
		}
		if ok {
			return found, nil
		}
	}
	return TCPSocket{}, fmt.Errorf("%w from %v to %v", ErrNoTCPSocket, local, remote)
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
