package agent_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corkvm/cork/guest/agent"
	"github.com/corkvm/cork/host/client"
	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/prototest"
)

// Forwarding, in memory: the real host client over a socket pair
// (connect), with the guest's ends real loopback and unix sockets that the
// test listens on.

// echoListener serves l: each connection gets back what it sent, then EOF.
func echoListener(t *testing.T, l net.Listener) {
	prototest.Serve(t, l, func(c net.Conn) {
		io.Copy(c, c)
		c.(interface{ CloseWrite() error }).CloseWrite()
	})
}

// tryDial opens a stream to addr through fw and closes it at once.
func tryDial(fw *client.Forwarder, addr string) error {
	s, err := fw.Dial(protocol.NetTCP, addr)
	if err == nil {
		s.Close()
	}
	return err
}

func forward(t *testing.T, srv *agent.Server, conn net.Conn, user string) *client.Forwarder {
	t.Helper()
	fw, err := client.Forward(conn, "test", user)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fw.Close() })
	return fw
}

// roundTrip sends msg on a stream to address, half closes, and returns
// the reply up to EOF.
func roundTrip(t *testing.T, fw *client.Forwarder, network uint8, address, msg string) (string, error) {
	t.Helper()
	s, err := fw.Dial(network, address)
	if err != nil {
		return "", err
	}
	defer s.Close()
	go func() {
		s.Write([]byte(msg))
		s.CloseWrite()
	}()
	done := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(s)
		done <- b
	}()
	select {
	case b := <-done:
		return string(b), nil
	case <-time.After(10 * time.Second):
		t.Fatal("no reply within 10s")
		return "", nil
	}
}

func TestForwardTCPAndUnix(t *testing.T) {
	srv := newServer(t, agent.Config{})
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	echoListener(t, tl)
	sock := filepath.Join(t.TempDir(), "echo.sock")
	ul, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	echoListener(t, ul)
	fw := forward(t, srv, connect(t, srv), "")
	for _, c := range []struct {
		network uint8
		address string
	}{{protocol.NetTCP, tl.Addr().String()}, {protocol.NetUnix, sock}, {protocol.NetTCP, ":" + strconv.Itoa(tl.Addr().(*net.TCPAddr).Port)}, {protocol.NetTCP, "localhost:" + strconv.Itoa(tl.Addr().(*net.TCPAddr).Port)}} {
		if got, err := roundTrip(t, fw, c.network, c.address, "ping "+c.address); err != nil || got != "ping "+c.address {
			t.Fatalf("%s: %q, %v", c.address, got, err)
		}
	}
	// A refused dial ends that stream alone.
	if _, err := roundTrip(t, fw, protocol.NetUnix, sock+".missing", ""); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing socket: %v", err)
	}
	if got, err := roundTrip(t, fw, protocol.NetTCP, tl.Addr().String(), "again"); err != nil || got != "again" {
		t.Fatalf("after a refusal: %q, %v", got, err)
	}
}

func TestForwardRefusals(t *testing.T) {
	off := newServer(t, agent.Config{Forward: agent.ForwardConfig{Mode: agent.ForwardNone}})
	if _, err := client.Forward(connect(t, off), "test", ""); !errors.Is(err, client.ErrCannotForward) {
		t.Fatalf("--forwarding=none: %v", err)
	}
	p := prototest.NewPeer(t, connect(t, off))
	p.Hello()
	p.Send(protocol.TypeForward, &protocol.Forward{})
	p.ExpectError(protocol.KindForward, "--forwarding=none")

	srv := newServer(t, agent.Config{})
	confined := connectAs(t, srv, func(c net.Conn) net.Conn { return peerConn{Conn: c, uid: 65534} })
	if _, err := client.Forward(confined, "test", "root"); err == nil || !strings.Contains(err.Error(), "only as itself") {
		t.Fatalf("a confined uid forwarding as root: %v", err)
	}
}

func TestForwardStreamsPerUID(t *testing.T) {
	srv := newServer(t, agent.Config{Forward: agent.ForwardConfig{MaxStreamsPerUID: 2}})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	echoListener(t, l)
	a, b := forward(t, srv, connect(t, srv), ""), forward(t, srv, connect(t, srv), "")
	s1, err1 := a.Dial(protocol.NetTCP, l.Addr().String())
	_, err2 := b.Dial(protocol.NetTCP, l.Addr().String())
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if _, err := a.Dial(protocol.NetTCP, l.Addr().String()); err == nil || !strings.Contains(err.Error(), "--max-streams-per-uid") {
		t.Fatalf("third stream of the uid: %v", err)
	}
	s1.Close()
	waitFor(t, "the closed stream's place", 10*time.Second, func() bool { return tryDial(b, l.Addr().String()) == nil })
}

// A peer that lies about a stream loses its connection; its streams are
// gone with it, counts included, and the agent serves on.
func TestForwardLyingPeer(t *testing.T) {
	srv := newServer(t, agent.Config{Forward: agent.ForwardConfig{MaxStreamsPerUID: 1}})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() { // a program that accepts and never reads
		var held []net.Conn
		for {
			c, err := l.Accept()
			if err != nil {
				for _, c := range held {
					c.Close()
				}
				return
			}
			held = append(held, c)
		}
	}()
	conn := connect(t, srv)
	p := prototest.NewPeer(t, conn)
	p.Hello()
	p.Send(protocol.TypeForward, &protocol.Forward{})
	p.Expect(protocol.TypeForwarding)
	conn.Write(protocol.AppendStream(nil, protocol.TypeStreamOpen, &protocol.StreamFrame{ID: 1, Window: 1 << 20, Network: protocol.NetTCP, Address: l.Addr().String()}))
	p.Expect(protocol.TypeStreamOpened)
	big := bytes.Repeat([]byte{'x'}, protocol.MaxStreamData)
	// Far more than the window and the sockets' buffers, never waiting
	// for credit.
	for range (64 << 20) / protocol.MaxStreamData {
		if _, err := conn.Write(protocol.AppendStream(nil, protocol.TypeStreamData, &protocol.StreamFrame{ID: 1, Data: big})); err != nil {
			break // the agent closed the connection: the lie was caught
		}
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	// The agent closed with the liar's data unread: a reset, or EOF.
	if _, err := io.Copy(io.Discard, conn); err != nil && !errors.Is(err, unix.ECONNRESET) {
		t.Fatalf("the agent kept the liar's connection: %v", err)
	}
	fw := forward(t, srv, connect(t, srv), "")
	waitFor(t, "the liar's stream to be counted out", 10*time.Second, func() bool { return tryDial(fw, l.Addr().String()) == nil })
	stillServes(t, srv)
}

func TestForwardStreamsInAll(t *testing.T) {
	srv := newServer(t, agent.Config{Forward: agent.ForwardConfig{MaxStreams: 1}})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	echoListener(t, l)
	if _, err := forward(t, srv, connect(t, srv), "").Dial(protocol.NetTCP, l.Addr().String()); err != nil {
		t.Fatal(err)
	}
	if _, err := forward(t, srv, connect(t, srv), "").Dial(protocol.NetTCP, l.Addr().String()); err == nil || !strings.Contains(err.Error(), "--max-streams)") {
		t.Fatalf("a stream past the limit in all: %v", err)
	}
}

// A remote forward: corkd listens on the guest's loopback and carries each
// connection to the host, which connects where it chose.
func TestForwardRemote(t *testing.T) {
	hostSide, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	echoListener(t, hostSide)
	dialHost := func() (net.Conn, error) { return net.Dial("tcp", hostSide.Addr().String()) }

	off := newServer(t, agent.Config{})
	if _, err := forward(t, off, connect(t, off), "").Listen(0, dialHost); err == nil || !strings.Contains(err.Error(), "--forwarding=all") {
		t.Fatalf("listen with --forwarding=local: %v", err)
	}

	srv := newServer(t, agent.Config{Forward: agent.ForwardConfig{Mode: agent.ForwardAll}})
	fw := forward(t, srv, connect(t, srv), "")
	addr, err := fw.Listen(0, dialHost)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("listening on %s, not the guest's loopback", addr)
	}
	for i := range 3 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte("to the host"))
		c.(*net.TCPConn).CloseWrite()
		if b, err := io.ReadAll(c); err != nil || string(b) != "to the host" {
			t.Fatalf("connection %d: %q, %v", i, b, err)
		}
		c.Close()
	}
	fw.Close()
	waitFor(t, "the guest listener to close with its connection", 10*time.Second, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
}

// halfCloseThrough connects to the unix socket at path, sends msg, half
// closes and returns the reply up to EOF.
func halfCloseThrough(t *testing.T, path, msg string) string {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte(msg))
	c.(*net.UnixConn).CloseWrite()
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("through %s: %v", path, err)
	}
	return string(b)
}

// A remote forward on a unix socket (ssh -R /path.sock:...): corkd makes
// the socket, mode 0600, carries its connections to the host, half close
// included, and removes it when the forward ends.
func TestForwardRemoteUnix(t *testing.T) {
	hostSide, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	echoListener(t, hostSide)
	dialHost := func() (net.Conn, error) { return net.Dial("tcp", hostSide.Addr().String()) }
	sock := filepath.Join(t.TempDir(), "remote.sock")

	off := newServer(t, agent.Config{})
	if _, err := forward(t, off, connect(t, off), "").ListenUnix(sock, dialHost); err == nil || !strings.Contains(err.Error(), "--forwarding=all") {
		t.Fatalf("listen with --forwarding=local: %v", err)
	}

	srv := newServer(t, agent.Config{Forward: agent.ForwardConfig{Mode: agent.ForwardAll}})
	fw := forward(t, srv, connect(t, srv), "")
	umask := threadUmasks(t)
	addr, err := fw.ListenUnix(sock, dialHost)
	if err != nil || addr != sock {
		t.Fatalf("listening on %q, %v; want %s", addr, err, sock)
	}
	// The socket's umask was its thread's alone, and went with it.
	waitFor(t, fmt.Sprintf("the threads' umasks to be %v again, as before the listen", umask), 10*time.Second, func() bool {
		return len(umask) == 1 && slices.Equal(threadUmasks(t), umask)
	})
	var st unix.Stat_t
	if err := unix.Lstat(sock, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK || st.Mode&0o7777 != 0o600 || st.Uid != uint32(os.Geteuid()) {
		t.Fatalf("the guest's socket has mode %o and uid %d; want a socket, 0600, uid %d", st.Mode, st.Uid, os.Geteuid())
	}
	for i := range 3 {
		if got := halfCloseThrough(t, sock, "to the host"); got != "to the host" {
			t.Fatalf("connection %d: %q", i, got)
		}
	}
	fw.Close()
	waitRemoved(t, "the guest's socket removed with its forward", sock)
}

// threadUmasks returns the umasks of the process's threads, each once,
// sorted.
func threadUmasks(t *testing.T) []string {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Skip(err)
	}
	var masks []string
	for _, task := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + task.Name() + "/status")
		if err != nil {
			continue // the thread ended
		}
		for _, line := range strings.Split(string(b), "\n") {
			if m, ok := strings.CutPrefix(line, "Umask:"); ok && !slices.Contains(masks, strings.TrimSpace(m)) {
				masks = append(masks, strings.TrimSpace(m))
			}
		}
	}
	slices.Sort(masks)
	return masks
}

// corkd replaces nothing at the path (sshd's StreamLocalBindUnlink is no):
// not a socket, a file, nor a link, which the bind does not follow
// either. A path too long for a socket, or relative, is refused too, and
// the connection serves on.
func TestForwardRemoteUnixRefusals(t *testing.T) {
	srv := newServer(t, agent.Config{Forward: agent.ForwardConfig{Mode: agent.ForwardAll}})
	fw := forward(t, srv, connect(t, srv), "")
	dir := t.TempDir()
	taken, file, link, target := filepath.Join(dir, "taken.sock"), filepath.Join(dir, "file"), filepath.Join(dir, "link"), filepath.Join(dir, "target")
	if _, err := fw.ListenUnix(taken, nil); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{taken, file, link} {
		if _, err := fw.ListenUnix(path, nil); err == nil || !strings.Contains(err.Error(), path+" exists already") || !strings.Contains(err.Error(), "StreamLocalBindUnlink") {
			t.Errorf("listen at %s: %v", path, err)
		}
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "kept" {
		t.Errorf("the file at the path: %q, %v", b, err)
	}
	if _, err := os.Lstat(target); !os.IsNotExist(err) {
		t.Errorf("the link's target was made: %v", err)
	}
	longest := filepath.Join(dir, strings.Repeat("x", 107-len(dir)-1))
	if _, err := fw.ListenUnix(longest, nil); err != nil {
		t.Errorf("a path of 107 bytes: %v", err)
	}
	if _, err := fw.ListenUnix(longest+"x", nil); err == nil || !strings.Contains(err.Error(), "at most 107") {
		t.Errorf("a path of 108 bytes: %v", err)
	}
	if _, err := fw.ListenUnix("relative.sock", nil); err == nil || !strings.Contains(err.Error(), "not absolute") {
		t.Errorf("a relative path: %v", err)
	}
	if addr, err := fw.ListenUnix(filepath.Join(dir, "after.sock"), nil); err != nil {
		t.Fatalf("after the refusals: %q, %v", addr, err)
	}
}

// A host that sends what cork never would, a Listen with a relative path,
// a NUL in it, or a port beside it, loses its connection, and corkd makes
// nothing.
func TestForwardRemoteUnixBadListen(t *testing.T) {
	srv := newServer(t, agent.Config{Forward: agent.ForwardConfig{Mode: agent.ForwardAll}})
	wd, _ := os.Getwd()
	for _, l := range []protocol.Listen{
		{ID: 1, Path: "corkd-relative.sock"},
		{ID: 1, Path: filepath.Join(wd, "corkd-nul.sock\x00x")},
		{ID: 1, Port: 9000, Path: filepath.Join(wd, "corkd-both.sock")},
	} {
		conn := connect(t, srv)
		p := prototest.NewPeer(t, conn)
		p.Hello()
		p.Send(protocol.TypeForward, &protocol.Forward{})
		p.Expect(protocol.TypeForwarding)
		p.Send(protocol.TypeListen, &l)
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			typ, _, err := p.R.Next()
			if err != nil {
				if os.IsTimeout(err) {
					t.Fatalf("%+v: the connection still open after 10s", l)
				}
				break
			}
			if typ == protocol.TypeListening {
				t.Fatalf("%+v: answered", l)
			}
		}
	}
	for _, name := range []string{"corkd-relative.sock", "corkd-nul.sock", "corkd-both.sock"} {
		if _, err := os.Lstat(filepath.Join(wd, name)); !os.IsNotExist(err) {
			os.Remove(filepath.Join(wd, name))
			t.Errorf("%s was made: %v", name, err)
		}
	}
	stillServes(t, srv)
}

// What is at the path when the forward ends is removed only if it is the
// socket corkd made: the user may have put something else there.
func TestForwardRemoteUnixLeavesAReplacement(t *testing.T) {
	srv := newServer(t, agent.Config{Forward: agent.ForwardConfig{Mode: agent.ForwardAll}})
	fw := forward(t, srv, connect(t, srv), "")
	dir := t.TempDir()
	replaced, other := filepath.Join(dir, "replaced.sock"), filepath.Join(dir, "other.sock")
	for _, path := range []string{replaced, other} {
		if _, err := fw.ListenUnix(path, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Remove(replaced); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(replaced, []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	fw.Close()
	// The listeners close in the order they were made.
	waitRemoved(t, "the second socket removed", other)
	if b, err := os.ReadFile(replaced); err != nil || string(b) != "mine" {
		t.Fatalf("what replaced the first socket: %q, %v", b, err)
	}
}

// stalledListener returns a loopback address whose connects hang: its
// accept queue is full and it never accepts, so the kernel drops the SYNs.
func stalledListener(t *testing.T) string {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, _ := unix.Getsockname(fd)
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port)
	// For a listener, TCP_INFO's unacked is the accept queue's length and
	// sacked its limit.
	waitFor(t, "the accept queue to fill", 10*time.Second, func() bool {
		if c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
			t.Cleanup(func() { c.Close() })
		}
		info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		return err == nil && info.Unacked > info.Sacked
	})
	return addr
}

// A connect still waiting when the forward ends is given up with it: its
// place among the streams is not held for the dial timeout.
func TestForwardDialEndsWithTheForward(t *testing.T) {
	srv := newServer(t, agent.Config{Forward: agent.ForwardConfig{MaxStreams: 1, DialTimeout: time.Minute}})
	stalled := stalledListener(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	echoListener(t, l)
	fw, err := client.Forward(connect(t, srv), "test", "")
	if err != nil {
		t.Fatal(err)
	}
	go fw.Dial(protocol.NetTCP, stalled)
	other := forward(t, srv, connect(t, srv), "")
	waitFor(t, "the stalled dial to take the one stream", 10*time.Second, func() bool {
		err := tryDial(other, l.Addr().String())
		return err != nil && strings.Contains(err.Error(), "--max-streams)")
	})
	fw.Close()
	waitFor(t, "the stalled dial's place", 10*time.Second, func() bool { return tryDial(other, l.Addr().String()) == nil })
}

func TestForwardDialTimeout(t *testing.T) {
	srv := newServer(t, agent.Config{Forward: agent.ForwardConfig{DialTimeout: 100 * time.Millisecond}})
	stalled := stalledListener(t)
	_, err := forward(t, srv, connect(t, srv), "").Dial(protocol.NetTCP, stalled)
	if err == nil || !strings.Contains(err.Error(), "no connection within 100ms") {
		t.Fatalf("a connect that never ends: %v", err)
	}
}

// A stream whose close the host never answers stays on its connection,
// and so in its uid's count of streams until the host does: closing the
// guest's end does not give its place away.
func TestForwardUnansweredCloseStillCounts(t *testing.T) {
	srv := newServer(t, agent.Config{Forward: agent.ForwardConfig{MaxStreamsPerUID: 1}})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() { // a program that hangs up at once
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	conn := connect(t, srv)
	p := prototest.NewPeer(t, conn)
	p.Hello()
	p.Send(protocol.TypeForward, &protocol.Forward{})
	p.Expect(protocol.TypeForwarding)
	conn.Write(protocol.AppendStream(nil, protocol.TypeStreamOpen, &protocol.StreamFrame{ID: 1, Window: 1 << 16, Network: protocol.NetTCP, Address: l.Addr().String()}))
	p.Expect(protocol.TypeStreamOpened)
	conn.Write(protocol.AppendStream(nil, protocol.TypeStreamEOF, &protocol.StreamFrame{ID: 1}))
	p.Expect(protocol.TypeStreamClose) // and never answered

	other := forward(t, srv, connect(t, srv), "")
	if s, err := other.Dial(protocol.NetTCP, l.Addr().String()); err == nil || !strings.Contains(err.Error(), "--max-streams-per-uid") {
		if s != nil {
			s.Close()
		}
		t.Fatalf("a second stream while the first awaits the host's close: %v", err)
	}
	conn.Write(protocol.AppendStream(nil, protocol.TypeStreamClose, &protocol.StreamFrame{ID: 1}))
	waitFor(t, "the answered stream's place", 10*time.Second, func() bool { return tryDial(other, l.Addr().String()) == nil })
}

// logLines is a log that keeps its lines, for a test to count.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, string(p))
	return len(p), nil
}

func (l *logLines) matching(s string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var m []string
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			m = append(m, line)
		}
	}
	return m
}

// A host that asks for stream after stream that corkd refuses, each
// naming a long address, gets a log line a second, of bounded length, not
// two copies of its address per refusal.
func TestForwardRefusalsLoggedOncePerSecond(t *testing.T) {
	logs := &logLines{}
	srv := newServer(t, agent.Config{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	fw := forward(t, srv, connect(t, srv), "")
	missing := "/" + strings.Repeat("x", protocol.MaxStreamAddress-1)
	start := time.Now()
	for range 50 {
		if _, err := fw.Dial(protocol.NetUnix, missing); err == nil {
			t.Fatal("a stream to a missing socket was opened")
		}
	}
	refused := logs.matching("stream refused")
	if max := int(time.Since(start)/time.Second) + 1; len(refused) == 0 || len(refused) > max {
		t.Fatalf("%d lines for 50 refusals in %v", len(refused), time.Since(start))
	}
	for _, line := range refused {
		if len(line) > 1024 {
			t.Fatalf("a line of %d bytes: %.200s", len(line), line)
		}
	}
}
