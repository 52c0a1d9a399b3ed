package agent_test

import (
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corkvm/cork/guest/agent"
	"github.com/corkvm/cork/host/client"
	"github.com/corkvm/cork/protocol/prototest"
)

// hostAgent stands in for the host's ssh-agent: it answers each
// connection with "agent:" and what it read, and counts connections.
type hostAgent struct {
	path  string
	conns atomic.Int32
}

func startHostAgent(t *testing.T) *hostAgent {
	t.Helper()
	h := &hostAgent{path: filepath.Join(t.TempDir(), "host-agent.sock")}
	l, err := net.Listen("unix", h.path)
	if err != nil {
		t.Fatal(err)
	}
	prototest.Serve(t, l, func(c net.Conn) {
		h.conns.Add(1)
		b, _ := io.ReadAll(c)
		c.Write(append([]byte("agent:"), b...))
	})
	return h
}

func (h *hostAgent) dial() (net.Conn, error) { return net.Dial("unix", h.path) }

// forward forwards h to a session of nobody's on srv.
func (h *hostAgent) forward(t *testing.T, srv *agent.Server) *client.Forwarder {
	t.Helper()
	fw, err := client.ForwardAgent(connect(t, srv), "test", "nobody", h.dial)
	if err != nil {
		t.Fatal(err)
	}
	return fw
}

// waitRemoved waits until nothing is at path.
func waitRemoved(t *testing.T, what, path string) {
	t.Helper()
	waitFor(t, what, 10*time.Second, func() bool {
		_, err := os.Lstat(path)
		return os.IsNotExist(err)
	})
}

// The agent socket is in a directory of its own, 0700 and the user's, and
// its connections reach the host's agent; both go with the connection.
func TestForwardAgentSocket(t *testing.T) {
	requireRoot(t)
	srv := newServer(t, agent.Config{})
	h := startHostAgent(t)
	fw := h.forward(t, srv)
	sock := fw.AgentSocket()
	dir := filepath.Dir(sock)
	for _, p := range []string{dir, sock} {
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != 65534 {
			t.Errorf("%s is uid %d's, not nobody's", p, st.Uid)
		}
		if p == dir && st.Mode&0o7777 != 0o700 {
			t.Errorf("%s has mode %o, want 0700", p, st.Mode&0o7777)
		}
	}
	if got := halfCloseThrough(t, sock, "list keys"); got != "agent:list keys" {
		t.Fatalf("through the agent socket: %q", got)
	}
	fw.Close()
	waitRemoved(t, "the agent socket's directory removed", dir)
}

// A process of another user than the session's (or root) is turned away
// by its SO_PEERCRED even when the directory would let it through.
func TestForwardAgentOtherUserRefused(t *testing.T) {
	requireRoot(t)
	srv := newServer(t, agent.Config{})
	h := startHostAgent(t)
	fw := h.forward(t, srv)
	defer fw.Close()
	sock := fw.AgentSocket()
	os.Chmod(filepath.Dir(sock), 0o755)
	os.Chmod(sock, 0o777)
	c, err := dialAsUID("unix", sock, 12345)
	if err != nil {
		t.Fatal(err)
	}
	// Closed unread: end of file, or a reset when "steal" was unread.
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("steal"))
	if got, err := io.ReadAll(c); len(got) != 0 || os.IsTimeout(err) {
		t.Fatalf("uid 12345 got %q (%v) from nobody's agent", got, err)
	}
	if got := halfCloseThrough(t, sock, "root"); got != "agent:root" {
		t.Fatalf("root after the refusal: %q", got)
	}
	if n := h.conns.Load(); n != 1 {
		t.Fatalf("the host's agent had %d connections, want root's alone", n)
	}
}

// dialAsUID connects to address on network from a thread whose uids are
// all uid, so that SO_PEERCRED, or the TCP socket's owner, names it.
func dialAsUID(network, address string, uid int) (net.Conn, error) {
	var c net.Conn
	err := runAsUID(uid, func() (err error) {
		c, err = net.DialTimeout(network, address, 10*time.Second)
		return err
	})
	return c, err
}

// runAsUID runs fn on a thread whose uids are all uid. The thread is never
// unlocked: it ends with its goroutine.
func runAsUID(uid int, fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(uid), uintptr(uid), uintptr(uid)); e != 0 {
			done <- os.NewSyscallError("setresuid", syscall.Errno(e))
			return
		}
		done <- fn()
	}()
	return <-done
}

// The directory is the user's, who may put a link to another directory at
// its name before the session ends: the socket's removal, as the user,
// must not delete what is there.
func TestForwardAgentRemovalFollowsNoPlantedLink(t *testing.T) {
	requireRoot(t)
	logs := &lockedBuffer{}
	srv := newServer(t, agent.Config{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	fw := startHostAgent(t).forward(t, srv)
	dir := filepath.Dir(fw.AgentSocket())
	victim := t.TempDir()
	os.Chmod(victim, 0o755)
	if err := os.WriteFile(filepath.Join(victim, "agent"), []byte("root's"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dir, dir+".moved"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir + ".moved"); os.Remove(dir) })
	if err := os.Symlink(victim, dir); err != nil {
		t.Fatal(err)
	}
	fw.Close()
	waitFor(t, "the removal's failure logged", 10*time.Second, func() bool {
		return strings.Contains(logs.String(), "removing the agent socket")
	})
	if _, err := os.Stat(filepath.Join(victim, "agent")); err != nil {
		t.Fatalf("root's file behind the planted link: %v", err)
	}
}

// cork attach -A: the kept session's SSH_AUTH_SOCK, removed when cork exec
// -A's connection went, works again, at the same path, for whoever may
// attach to the session; a directory another user put at its name is not
// used.
func TestForwardAgentAgainForAKeptSession(t *testing.T) {
	requireRoot(t)
	srv := newServer(t, agent.Config{})
	h := startHostAgent(t)
	first := h.forward(t, srv)
	sock := first.AgentSocket()
	p := dial(t, srv, -1)
	ex := keep("agented", "sleep", "60")
	ex.User, ex.Env = "nobody", []string{"SSH_AUTH_SOCK=" + sock}
	p.Exec(ex)
	first.Close()
	waitRemoved(t, "the first socket removed", filepath.Dir(sock))

	// Another uid may not reach the session, nor learn its socket.
	confined := connectAs(t, srv, func(c net.Conn) net.Conn { return peerConn{Conn: c, uid: 1234} })
	if _, err := client.ForwardAgentTo(confined, "test", "agented", h.dial); err == nil || !strings.Contains(err.Error(), "no such session") {
		t.Fatalf("uid 1234: %v", err)
	}
	again, err := client.ForwardAgentTo(connect(t, srv), "test", "agented", h.dial)
	if err != nil {
		t.Fatal(err)
	}
	if again.AgentSocket() != sock {
		t.Fatalf("socket made again at %s, want %s", again.AgentSocket(), sock)
	}
	if got := halfCloseThrough(t, sock, "again"); got != "agent:again" {
		t.Fatalf("through the socket made again: %q", got)
	}
	// A second attach -A takes the socket over; the first one's end
	// leaves it alone.
	third, err := client.ForwardAgentTo(connect(t, srv), "test", "agented", h.dial)
	if err != nil {
		t.Fatal(err)
	}
	before := srv.Active()
	again.Close()
	waitFor(t, "the first attach's forwarding to end", 10*time.Second, func() bool { return srv.Active() < before })
	if got := halfCloseThrough(t, sock, "third"); got != "agent:third" {
		t.Fatalf("through the second attach's socket: %q", got)
	}
	third.Close()
	waitRemoved(t, "the second socket removed", filepath.Dir(sock))

	// A directory of root's at the name: corkd will not use it for nobody.
	if err := os.Mkdir(filepath.Dir(sock), 0o700); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(filepath.Dir(sock))
	if _, err := client.ForwardAgentTo(connect(t, srv), "test", "agented", h.dial); err == nil || !strings.Contains(err.Error(), "not a directory of nobody's alone") {
		t.Fatalf("a directory of root's at the socket's: %v", err)
	}
}
