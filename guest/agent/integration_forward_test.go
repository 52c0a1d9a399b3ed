package agent_test

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
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

// forwardUser is a user a test makes (corkr...), with a home of its own,
// and removes again.
type forwardUser struct {
	name     string
	uid, gid uint32
	home     string
}

func newForwardUser(t *testing.T) *forwardUser {
	t.Helper()
	requireRoot(t)
	if _, err := exec.LookPath("useradd"); err != nil {
		t.Skip("no useradd")
	}
	name := fmt.Sprintf("corkr%d%03d", os.Getpid()%10000, time.Now().UnixNano()%1000)
	home, err := os.MkdirTemp("", "corkhome")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	mustRun(t, "useradd", "-M", "-d", home, "-s", "/bin/sh", name)
	// -f: a thread of this process may still have the user's uid (a
	// forward's, ending with its connection).
	t.Cleanup(func() { exec.Command("userdel", "-f", name).Run() })
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	fu := &forwardUser{name: name, uid: uint32(uid), gid: uint32(gid), home: home}
	if err := os.Chown(home, int(uid), int(gid)); err != nil {
		t.Fatal(err)
	}
	os.Chmod(home, 0o755)
	return fu
}

// rootDir is a directory of root's that everyone may enter and only root
// may write.
func rootDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "corkroot")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	return dir
}

// The guest's socket of a remote forward is made as the user: it is the
// user's, mode 0600, only where the user may write, and a link planted at
// or above its path gets nothing the user could not do.
func TestForwardRemoteUnixAsTheUser(t *testing.T) {
	u := newForwardUser(t)
	srv := newServer(t, agent.Config{Forward: agent.ForwardConfig{Mode: agent.ForwardAll}})
	hostSide, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	echoListener(t, hostSide)
	dialHost := func() (net.Conn, error) { return net.Dial("tcp", hostSide.Addr().String()) }
	fw := forward(t, srv, connect(t, srv), u.name)
	sock := filepath.Join(u.home, "remote.sock")
	if _, err := fw.ListenUnix(sock, dialHost); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(sock, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK || st.Mode&0o7777 != 0o600 || st.Uid != u.uid || st.Gid != u.gid {
		t.Fatalf("the socket has mode %o, owner %d:%d; want a socket, 0600, %d:%d", st.Mode, st.Uid, st.Gid, u.uid, u.gid)
	}
	if got := halfCloseThrough(t, sock, "root"); got != "root" {
		t.Fatalf("root through the socket: %q", got)
	}
	if c, err := dialAsUID("unix", sock, 12345); err == nil || !strings.Contains(err.Error(), "permission denied") {
		if c != nil {
			c.Close()
		}
		t.Fatalf("another uid connected to the user's socket: %v", err)
	}

	theirs := rootDir(t)
	if err := os.Symlink(theirs, filepath.Join(u.home, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(theirs, "at.sock"), filepath.Join(u.home, "at.sock")); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		filepath.Join(theirs, "x.sock"):         "permission denied",
		filepath.Join(u.home, "link", "y.sock"): "permission denied",
		filepath.Join(u.home, "at.sock"):        "exists already",
	} {
		if _, err := fw.ListenUnix(path, dialHost); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("listen at %s: %v, want %q", path, err, want)
		}
	}
	if ents, _ := os.ReadDir(theirs); len(ents) != 0 {
		t.Errorf("made in root's directory: %v", ents)
	}
	fw.Close()
	waitRemoved(t, "the user's socket removed", sock)
}

// Another user of the guest races the user for the path: one who took
// the name first keeps it (nothing is replaced), and one who replaced the
// socket in a directory that let them keeps what they put there.
func TestForwardRemoteUnixAnotherUserRaces(t *testing.T) {
	u, other := newForwardUser(t), newForwardUser(t)
	srv := newServer(t, agent.Config{Forward: agent.ForwardConfig{Mode: agent.ForwardAll}})
	fw := forward(t, srv, connect(t, srv), u.name)
	shared := rootDir(t)
	os.Chmod(shared, 0o777) // not sticky: anyone may rename over anything
	first, replaced, marker := filepath.Join(shared, "first.sock"), filepath.Join(shared, "replaced.sock"), filepath.Join(shared, "marker.sock")
	err := runAsUID(int(other.uid), func() error {
		return os.WriteFile(first, []byte("other's"), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fw.ListenUnix(first, nil); err == nil || !strings.Contains(err.Error(), "exists already") {
		t.Fatalf("listen where another user was first: %v", err)
	}
	for _, path := range []string{replaced, marker} {
		if _, err := fw.ListenUnix(path, nil); err != nil {
			t.Fatal(err)
		}
	}
	err = runAsUID(int(other.uid), func() error {
		if err := os.WriteFile(replaced+".new", []byte("other's"), 0o644); err != nil {
			return err
		}
		return os.Rename(replaced+".new", replaced)
	})
	if err != nil {
		t.Fatal(err)
	}
	fw.Close()
	waitRemoved(t, "the user's other socket removed", marker) // the listeners close in order
	for _, path := range []string{first, replaced} {
		if b, err := os.ReadFile(path); err != nil || string(b) != "other's" {
			t.Errorf("the other user's file at %s: %q, %v", path, b, err)
		}
	}
}

// A connection to a remote forward's listener counts against the streams
// of the uid that made it, not the forwarding user's: another user who
// connects over and over reaches its own limit, and the forwarding user
// keeps all of its streams.
func TestForwardRemoteConnectionsCountAgainstTheirMaker(t *testing.T) {
	u, other := newForwardUser(t), newForwardUser(t)
	srv := newServer(t, agent.Config{Forward: agent.ForwardConfig{Mode: agent.ForwardAll, MaxStreamsPerUID: 2}})
	hostSide, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	echoListener(t, hostSide)
	dialHost := func() (net.Conn, error) { return net.Dial("tcp", hostSide.Addr().String()) }
	fw := forward(t, srv, connect(t, srv), u.name)
	port, err := fw.Listen(0, dialHost)
	if err != nil {
		t.Fatal(err)
	}
	sock, err := fw.ListenUnix(filepath.Join(u.home, "shared.sock"), dialHost)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(sock, 0o666) // the user lets everyone in

	echoes := func(c net.Conn) bool {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte("ping"))
		b := make([]byte, 4)
		_, err := io.ReadFull(c, b)
		return err == nil && string(b) == "ping"
	}
	for i, to := range []struct{ network, address string }{{"tcp", port}, {"unix", sock}, {"tcp", port}, {"unix", sock}} {
		c, err := dialAsUID(to.network, to.address, int(other.uid))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if got, want := echoes(c), i < 2; got != want {
			t.Fatalf("the other user's connection %d over %s reached the host: %v, want %v", i+1, to.network, got, want)
		}
	}
	s, err := fw.Dial(protocol.NetTCP, hostSide.Addr().String())
	if err == nil {
		defer s.Close()
		err = s.Answer()
	}
	if err != nil {
		t.Fatalf("the forwarding user's own stream: %v", err)
	}
	c, err := dialAsUID("tcp", port, int(u.uid))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !echoes(c) {
		t.Fatal("the forwarding user's own connection to its listener did not reach the host")
	}
}
