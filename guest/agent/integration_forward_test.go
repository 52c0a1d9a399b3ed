package agent_test

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corkvm/cork/guest/agent"
	"github.com/corkvm/cork/protocol"
)

// Forwarding as other users, for real: these tests dial and listen as
// nobody and as users they create, so they need root (requireRoot skips
// them without).

// A unix socket the user may not open is refused with the guest's own
// message: the dial runs with the user's filesystem identity.
func TestForwardUnixSocketAsUser(t *testing.T) {
	requireRoot(t)
	srv := newServer(t, agent.Config{})
	dir := t.TempDir() // 0700, root's
	sock := filepath.Join(dir, "root-only.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	echoListener(t, l)
	_, err = roundTrip(t, forward(t, srv, connect(t, srv), "nobody"), protocol.NetUnix, sock, "x")
	if err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("nobody reached root's socket: %v", err)
	}
	if got, err := roundTrip(t, forward(t, srv, connect(t, srv), "root"), protocol.NetUnix, sock, "root"); err != nil || got != "root" {
		t.Fatalf("root: %q, %v", got, err)
	}
}

func TestForwardRemotePrivilegedPort(t *testing.T) {
	requireRoot(t)
	srv := newServer(t, agent.Config{Forward: agent.ForwardConfig{Mode: agent.ForwardAll}})
	_, err := forward(t, srv, connect(t, srv), "nobody").Listen(80, nil)
	if err == nil || !strings.Contains(err.Error(), "port 80 is privileged") {
		t.Fatalf("nobody on port 80: %v", err)
	}
}

// nobodyIDs is the uid and primary gid of the user nobody.
func nobodyIDs(t *testing.T) (uid, gid uint32) {
	t.Helper()
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	uid64, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid64, _ := strconv.ParseUint(u.Gid, 10, 32)
	return uint32(uid64), uint32(gid64)
}

// The program behind a unix socket sees the session user as its peer,
// not root: SO_PEERCRED reports the connecting thread's effective uid,
// which a filesystem uid alone leaves at 0.
func TestForwardUnixPeerIsTheUser(t *testing.T) {
	requireRoot(t)
	uid, gid := nobodyIDs(t)
	srv := newServer(t, agent.Config{})
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} { // nobody may reach the socket
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sock := filepath.Join(dir, "peer.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	os.Chmod(sock, 0o777)
	creds := make(chan *unix.Ucred, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		var cred *unix.Ucred
		raw, _ := c.(*net.UnixConn).SyscallConn()
		raw.Control(func(fd uintptr) { cred, _ = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
		creds <- cred
	}()
	s, err := forward(t, srv, connect(t, srv), "nobody").Dial(protocol.NetUnix, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	select {
	case cred := <-creds:
		if cred == nil || cred.Uid != uid || cred.Gid != gid {
			t.Fatalf("the socket's peer is %+v, want uid %d gid %d (nobody)", cred, uid, gid)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no connection within 10s")
	}
	if os.Geteuid() != 0 {
		t.Fatal("the agent's process is no longer root")
	}
}

// A TCP connection the guest makes for a stream is owned by the session
// user, as a uid-owner firewall rule sees it: /proc/net/tcp's uid column.
func TestForwardTCPOwnedByTheUser(t *testing.T) {
	requireRoot(t)
	uid, _ := nobodyIDs(t)
	srv := newServer(t, agent.Config{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	ports := make(chan int, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		ports <- c.RemoteAddr().(*net.TCPAddr).Port
		io.Copy(io.Discard, c) // held open until the stream closes
		c.Close()
	}()
	s, err := forward(t, srv, connect(t, srv), "nobody").Dial(protocol.NetTCP, l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var port int
	select {
	case port = <-ports:
	case <-time.After(10 * time.Second):
		t.Fatal("no connection within 10s")
	}
	if got := tcpSocketUID(t, port, l.Addr().(*net.TCPAddr).Port); got != uid {
		t.Fatalf("the guest's end of the connection is owned by uid %d, want %d (nobody)", got, uid)
	}
}

// tcpSocketUID reads the owner of the IPv4 socket from local port lport
// to remote port rport from /proc/net/tcp.
func tcpSocketUID(t *testing.T, lport, rport int) uint32 {
	t.Helper()
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Skip(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 7 && strings.HasSuffix(f[1], fmt.Sprintf(":%04X", lport)) && strings.HasSuffix(f[2], fmt.Sprintf(":%04X", rport)) {
			uid, err := strconv.ParseUint(f[7], 10, 32)
			if err != nil {
				t.Fatal(err)
			}
			return uint32(uid)
		}
	}
	t.Fatalf("no socket from port %d to port %d in /proc/net/tcp", lport, rport)
	return 0
}
