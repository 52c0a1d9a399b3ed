package procfs

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Lines as the kernel prints them: an IPv4 listener on loopback, an IPv6
// one on ::1, a connection, and one that ends too soon to be a socket.
func TestScanTCP(t *testing.T) {
	table := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1435 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 11 1 0 100 0 0 10 0
   1: 00000000000000000000000001000000:22B8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 21 1 0 100 0 0 10 0
   2: 0100007F:1435 0100007F:D3A2 01 00000000:00000000 00:00000000 00000000  1000        0 14 1 0 100 0 0 10 0
   3: 0100007F:1435 0100007F:D3A2 01
`
	var got []TCPSocket
	if err := ScanTCP(strings.NewReader(table), func(s TCPSocket) bool { got = append(got, s); return true }); err != nil {
		t.Fatal(err)
	}
	want := []TCPSocket{
		{Local: netip.MustParseAddrPort("127.0.0.1:5173"), Remote: netip.MustParseAddrPort("0.0.0.0:0"), State: TCPListen, UID: 1000, Inode: 11},
		{Local: netip.MustParseAddrPort("[::1]:8888"), Remote: netip.MustParseAddrPort("[::]:0"), State: TCPListen, UID: 1000, Inode: 21},
		{Local: netip.MustParseAddrPort("127.0.0.1:5173"), Remote: netip.MustParseAddrPort("127.0.0.1:54178"), State: TCPEstablished, UID: 1000, Inode: 14},
	}
	if len(got) != len(want) {
		t.Fatalf("%d sockets, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("socket %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}

// FindTCP finds the connecting end of a loopback connection, by the
// accepted end's addresses swapped, from an IPv4 socket and from an IPv6
// one connected to an IPv4-mapped address.
func TestFindTCP(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	to := l.Addr().(*net.TCPAddr).AddrPort()
	dialers := map[string]func() (int, error){
		"ipv4": func() (int, error) {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err == nil {
				err = unix.Connect(fd, &unix.SockaddrInet4{Port: int(to.Port()), Addr: to.Addr().As4()})
			}
			return fd, err
		},
		"ipv4-mapped": func() (int, error) {
			fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err == nil {
				err = unix.Connect(fd, &unix.SockaddrInet6{Port: int(to.Port()), Addr: to.Addr().As16()})
			}
			return fd, err
		},
	}
	for name, dial := range dialers {
		t.Run(name, func(t *testing.T) {
			fd, err := dial()
			if fd >= 0 {
				defer unix.Close(fd)
			}
			if err != nil {
				if name == "ipv4-mapped" {
					t.Skipf("no IPv6 here: %v", err)
				}
				t.Fatal(err)
			}
			l.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
			c, err := l.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			local, remote := c.LocalAddr().(*net.TCPAddr).AddrPort(), c.RemoteAddr().(*net.TCPAddr).AddrPort()
			s, err := FindTCP(remote, local)
			if err != nil {
				t.Fatal(err)
			}
			if s.UID != uint32(os.Geteuid()) || s.Inode == 0 || s.State != TCPEstablished {
				t.Fatalf("the connecting socket: %+v; want uid %d, an inode, established", s, os.Geteuid())
			}
			// The accepted end is root's too, but is not the one asked for.
			if s.Local.Port() != remote.Port() {
				t.Fatalf("found %+v, not the socket from %v", s, remote)
			}
		})
	}
	if _, err := FindTCP(netip.MustParseAddrPort("127.0.0.1:1"), to); !errors.Is(err, ErrNoTCPSocket) {
		t.Fatalf("a socket that does not exist: %v", err)
	}
}
