//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/corkvm/cork/host/e2e/harness"
	"github.com/corkvm/cork/protocol/prototest"
)

// cork forward across real processes: cork listens, corkd dials, and the
// guest's programs are listeners this test serves (the "guest" is this
// machine).

// forwarder is a running cork forward.
type forwarder struct {
	cmd    *exec.Cmd
	from   []string // the host's addresses, in the order of the specs
	stderr *harness.Buffer
	stops  sync.Once
}

// stop interrupts cork forward and waits for it: it must exit 0.
func (f *forwarder) stop(t *testing.T) {
	t.Helper()
	f.stops.Do(func() {
		f.cmd.Process.Signal(syscall.SIGINT)
		if err := f.cmd.Wait(); err != nil {
			t.Errorf("cork forward after SIGINT: %v; stderr:\n%s", err, f.stderr.String())
		}
	})
}

// startForward runs cork forward with args and waits for its one line per
// forward; the test's end interrupts it and expects exit 0.
func startForward(t *testing.T, args ...string) *forwarder {
	t.Helper()
	return startForwardAs(t, nil, args...)
}

// startForwardAs is startForward run with cred, when not nil.
func startForwardAs(t *testing.T, cred *syscall.Credential, args ...string) *forwarder {
	t.Helper()
	f := &forwarder{cmd: exec.Command(bin.Cork, append([]string{"forward"}, args...)...), stderr: &harness.Buffer{}}
	f.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	f.cmd.Stderr = f.stderr
	out, err := f.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	t.Cleanup(func() { f.stop(t) })
	specs := 0
	for _, a := range args {
		if strings.Contains(a, ":") && !strings.Contains(a, "://") || !strings.HasPrefix(a, "-") && isDigits(a) {
			specs++
		}
	}
	timeout := time.After(20 * time.Second)
	for len(f.from) < specs {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("cork forward ended; stderr:\n%s", f.stderr.String())
			}
			from, _, ok := strings.Cut(strings.TrimPrefix(l, "Forwarding from "), " -> ")
			if !ok {
				t.Fatalf("unexpected line %q", l)
			}
			f.from = append(f.from, from)
		case <-timeout:
			t.Fatalf("no Forwarding lines within 20s; stderr:\n%s", f.stderr.String())
		}
	}
	return f
}

func isDigits(s string) bool { return s != "" && strings.Trim(s, "0123456789") == "" }

// dialFrom connects to a forward's host side.
func dialFrom(t *testing.T, addr string) net.Conn {
	t.Helper()
	network := "tcp"
	if strings.HasPrefix(addr, "/") {
		network = "unix"
	}
	c, err := net.DialTimeout(network, addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(60 * time.Second))
	return c
}

// counter reads to EOF, then answers how many bytes it read: a reply that
// exists only if the host's half close reached the guest's listener.
func counter(c net.Conn) {
	n, _ := io.Copy(io.Discard, c)
	fmt.Fprintf(c, "read %d bytes", n)
}

// echoOrStall returns a handler that echoes, unless the first byte is
// 'S': then it stops reading until the test ends.
func echoOrStall(t *testing.T) func(net.Conn) {
	ended := make(chan struct{})
	t.Cleanup(func() { close(ended) })
	return func(c net.Conn) {
		var first [1]byte
		if _, err := io.ReadFull(c, first[:]); err != nil {
			return
		}
		if first[0] == 'S' {
			<-ended
			return
		}
		c.Write(first[:])
		io.Copy(c, c)
	}
}

func listenTCP(t *testing.T) (net.Listener, string) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return l, port
}

// halfClose writes msg, shuts the write side (SHUT_WR) and reads the reply.
func halfClose(t *testing.T, c net.Conn, msg []byte) string {
	t.Helper()
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestForwardHalfCloseTCPAndUnix(t *testing.T) {
	a := startAgent(t)
	tl, port := listenTCP(t)
	prototest.Serve(t, tl, counter)
	dir := t.TempDir()
	guestSock, hostSock := filepath.Join(dir, "guest.sock"), filepath.Join(dir, "host.sock")
	ul, err := net.Listen("unix", guestSock)
	if err != nil {
		t.Fatal(err)
	}
	prototest.Serve(t, ul, counter)
	// 127.0.0.2 on the host: the guest's port is on this machine too.
	f := startForward(t, "--connect", a.url, "--address", "127.0.0.2", port, "0:"+port, hostSock+":"+guestSock, "0:"+guestSock)
	if f.from[0] != "127.0.0.2:"+port || f.from[2] != hostSock {
		t.Fatalf("listening on %v", f.from)
	}
	msg := make([]byte, 3<<20)
	rand.Read(msg)
	for _, from := range f.from {
		if got, want := halfClose(t, dialFrom(t, from), msg), fmt.Sprintf("read %d bytes", len(msg)); got != want {
			t.Fatalf("through %s: %q, want %q", from, got, want)
		}
	}
}

func TestForwardManyConnectionsAndAStalledOne(t *testing.T) {
	a := startAgent(t)
	l, port := listenTCP(t)
	prototest.Serve(t, l, echoOrStall(t))
	f := startForward(t, "--connect", a.url, "0:"+port)
	stalled := dialFrom(t, f.from[0])
	go stalled.Write(append([]byte{'S'}, make([]byte, 32<<20)...)) // never read in the guest
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := dialFrom(t, f.from[0])
			msg := make([]byte, 256<<10)
			rand.Read(msg)
			msg[0] = 'E'
			go c.Write(msg)
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
				errs <- fmt.Errorf("connection %d: %v, echo equal %v", i, err, bytes.Equal(got, msg))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestForwardRefusedSocketEndsOnlyItsConnection(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: corkd dials as nobody")
	}
	a := startAgent(t)
	dir := t.TempDir() // 0700: nobody cannot reach what is inside
	guestSock := filepath.Join(dir, "root-only.sock")
	ul, err := net.Listen("unix", guestSock)
	if err != nil {
		t.Fatal(err)
	}
	prototest.Serve(t, ul, counter)
	l, port := listenTCP(t)
	prototest.Serve(t, l, counter)
	f := startForward(t, "--connect", a.url, "-u", "nobody", filepath.Join(t.TempDir(), "h.sock")+":"+guestSock, "0:"+port)
	c := dialFrom(t, f.from[0])
	if b, _ := io.ReadAll(c); len(b) != 0 {
		t.Fatalf("read %q through a refused stream", b)
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(f.stderr.String(), "permission denied"); {
		if time.Now().After(deadline) {
			t.Fatalf("cork did not say why within 10s; stderr:\n%s", f.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := halfClose(t, dialFrom(t, f.from[1]), []byte("ok")); got != "read 2 bytes" {
		t.Fatalf("the other forward: %q", got)
	}
}

func TestForwardMachineStandin(t *testing.T) {
	l, port := listenTCP(t)
	prototest.Serve(t, l, counter)
	f := startForward(t, "--machine", "bottle", "--smolvm", bin.Standin, "--agent", bin.Corkd, "0:"+port)
	msg := make([]byte, 1<<20)
	rand.Read(msg)
	if got := halfClose(t, dialFrom(t, f.from[0]), msg); got != "read 1048576 bytes" {
		t.Fatalf("through the stand-in: %q; stderr:\n%s", got, f.stderr.String())
	}
}

// cork forward -R: corkd listens on the guest's loopback, cork connects on
// the host; refused unless corkd serves with --forwarding=all.
func TestForwardRemote(t *testing.T) {
	l, port := listenTCP(t)
	prototest.Serve(t, l, counter)
	local := startAgent(t)
	out, err := exec.Command(bin.Cork, "forward", "--connect", local.url, "-R", "0:127.0.0.1:"+port).CombinedOutput()
	if code := exitCode(err); code != 125 || !strings.Contains(string(out), "--forwarding=all") {
		t.Fatalf("with --forwarding=local: exit %d, %s", code, out)
	}

	a := startAgent(t, "--forwarding=all")
	f := startForward(t, "--connect", a.url, "-R", "0:127.0.0.1:"+port)
	guest := strings.TrimPrefix(f.from[0], "guest ")
	if !strings.HasPrefix(guest, "127.0.0.1:") {
		t.Fatalf("guest listener on %q", f.from[0])
	}
	if got := halfClose(t, dialFrom(t, guest), []byte("from the guest")); got != "read 14 bytes" {
		t.Fatalf("through the guest's listener: %q", got)
	}
}

// cork forward -R with unix sockets on either side, as ssh -R: corkd
// makes the guest's socket as the user, mode 0600, refuses a path where
// something is, and removes its socket when cork forward ends.
func TestForwardRemoteUnix(t *testing.T) {
	u := newTestUser(t)
	a := startAgent(t, "--forwarding=all")
	l, port := listenTCP(t)
	prototest.Serve(t, l, counter)
	hostSock := filepath.Join(t.TempDir(), "host.sock")
	ul, err := net.Listen("unix", hostSock)
	if err != nil {
		t.Fatal(err)
	}
	prototest.Serve(t, ul, counter)
	toPort, toSock := filepath.Join(u.home, "to-port.sock"), filepath.Join(u.home, "to-sock.sock")
	f := startForward(t, "--connect", a.url, "-u", u.name, "-R", toPort+":"+port, "-R", toSock+":"+hostSock, "-R", "0:"+hostSock)
	for i, want := range []string{"guest " + toPort, "guest " + toSock, "guest 127.0.0.1:"} {
		if !strings.HasPrefix(f.from[i], want) {
			t.Fatalf("forward %d from %q, want %q", i, f.from[i], want)
		}
	}
	for _, path := range []string{toPort, toSock} {
		var st syscall.Stat_t
		if err := syscall.Lstat(path, &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode&syscall.S_IFMT != syscall.S_IFSOCK || st.Mode&0o7777 != 0o600 || int(st.Uid) != u.uid {
			t.Fatalf("%s has mode %o and uid %d; want a socket, 0600, uid %d", path, st.Mode, st.Uid, u.uid)
		}
	}
	msg := make([]byte, 1<<20)
	rand.Read(msg)
	for _, from := range f.from {
		if got := halfClose(t, dialFrom(t, strings.TrimPrefix(from, "guest ")), msg); got != "read 1048576 bytes" {
			t.Fatalf("through %s: %q", from, got)
		}
	}
	out, err := exec.Command(bin.Cork, "forward", "--connect", a.url, "-u", u.name, "-R", toPort+":"+port).CombinedOutput()
	if code := exitCode(err); code != 125 || !strings.Contains(string(out), toPort+" exists already") || !strings.Contains(string(out), "StreamLocalBindUnlink") {
		t.Fatalf("a second -R at the same path: exit %d, %s", code, out)
	}
	if got := halfClose(t, dialFrom(t, toPort), []byte("still")); got != "read 5 bytes" {
		t.Fatalf("the first forward's socket after the refusal: %q", got)
	}
	f.stop(t)
	for _, path := range []string{toPort, toSock} {
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if _, err := os.Lstat(path); os.IsNotExist(err) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s still there 10s after cork forward ended", path)
			}
		}
	}
}

// corkd stays root after forwards as another user, with -R sockets made
// as the user: its threads that took the user's identity end with their
// work, and none of them is the main thread, whose identity is the
// process's for kill(2) and ps. A goroutine that locked the main thread
// and ended would leave it parked with the user's uid for good.
func TestForwardCorkdStaysItsOwnUser(t *testing.T) {
	u := newTestUser(t)
	a := startAgent(t, "--forwarding=all")
	l, port := listenTCP(t)
	prototest.Serve(t, l, counter)
	for i := range 40 {
		f := startForward(t, "--connect", a.url, "-u", u.name, "-R", filepath.Join(u.home, fmt.Sprintf("r%d.sock", i))+":"+port, "0:"+port)
		for range 4 {
			if got := halfClose(t, dialFrom(t, f.from[0]), []byte("x")); got != "read 1 bytes" {
				t.Fatalf("through the forward: %q", got)
			}
		}
		f.stop(t)
	}
	pid := a.cmd.Process.Pid
	if line := statusLine(t, pid, "Uid:"); line != "Uid: 0 0 0 0" {
		t.Errorf("corkd's process is no longer root's: %s", line)
	}
	if err := killAs(u.uid, pid); !errors.Is(err, syscall.EPERM) {
		t.Errorf("%s signalled corkd: %v", u.name, err)
	}
}

// killAs sends signal 0 to pid from a thread whose uids are all uid.
func killAs(uid, pid int) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESUID, uintptr(uid), uintptr(uid), uintptr(uid)); e != 0 {
			done <- e
			return
		}
		done <- syscall.Kill(pid, 0)
	}()
	return <-done
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// A uid admitted with --allow-uid that forwards a socket to corkd's own
// reaches corkd as itself, not as root: corkd dials with the user's
// effective uid, which is what SO_PEERCRED reports to the listener.
func TestForwardToCorkdItselfStaysTheUser(t *testing.T) {
	u := newTestUser(t)
	a := startAgent(t, "--allow-uid", strconv.Itoa(u.uid))
	groups := []uint32{uint32(u.gid), uint32(u.groupGID)}
	through := filepath.Join(u.home, "corkd.sock")
	startForwardAs(t, &syscall.Credential{Uid: uint32(u.uid), Gid: uint32(u.gid), Groups: groups},
		"--connect", a.url, through+":"+a.sock())
	out, code := corkAs(u.uid, u.gid, groups, "exec", "--connect", "unix://"+through, "-u", "root", "--", "id", "-u")
	if code != 125 || !strings.Contains(out, "only as itself") {
		t.Fatalf("-u root through a forward to corkd's socket: exit %d, %q; want 125, only as itself", code, out)
	}
	out, code = corkAs(u.uid, u.gid, groups, "exec", "--connect", "unix://"+through, "--", "id", "-u")
	if code != 0 || strings.TrimSpace(out) != strconv.Itoa(u.uid) {
		t.Fatalf("through the forward as itself: exit %d, %q", code, out)
	}
}
