//go:build linux

package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corkvm/cork/host/e2e/harness"
	"github.com/corkvm/cork/host/e2e/termtest"
	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/prototest"
)

// corkd serves each forwarding connection on a socket in a worker of its
// own: a child of corkd's, at one P.

// workers lists corkd's forwarding workers, the children of pid.
func workers(pid int) []int {
	var ws []int
	for child := range children(pid) {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", child))
		if bytes.HasPrefix(cmdline, []byte("corkd\x00forward-worker\x00")) {
			ws = append(ws, child)
		}
	}
	return ws
}

// statusLine returns the line of /proc/PID/status that starts with key,
// its fields joined by single spaces.
func statusLine(t *testing.T, pid int, key string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, key) {
			return strings.Join(strings.Fields(line), " ")
		}
	}
	return ""
}

// TestForwardWorkerIsCorkds: a forward as a user is served by one worker
// of corkd's, not the user's, so the user can neither signal nor trace
// it (nor read the host's streams or corkd's stderr through it); it has
// one P, a process group of its own and / as its directory, and it ends with
// the forward.
func TestForwardWorkerIsCorkds(t *testing.T) {
	u := newTestUser(t)
	a := startAgent(t)
	l, port := listenTCP(t)
	prototest.Serve(t, l, counter)
	f := startForward(t, "--connect", a.url, "-u", u.name, "0:"+port)
	if got := halfClose(t, dialFrom(t, f.from[0]), []byte("abc")); got != "read 3 bytes" {
		t.Fatalf("through the forward: %q", got)
	}
	ws := workers(a.cmd.Process.Pid)
	if len(ws) != 1 {
		t.Fatalf("corkd has %d forwarding workers, want 1: %v", len(ws), ws)
	}
	w := ws[0]
	if got := statusLine(t, w, "Uid:"); got != "Uid: 0 0 0 0" {
		t.Errorf("the worker's %s, want corkd's (root's)", got)
	}
	if err := killAs(u.uid, w); !errors.Is(err, syscall.EPERM) {
		t.Errorf("%s signalled the worker: %v", u.name, err)
	}
	if env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", w)); !bytes.Contains(env, []byte("GOMAXPROCS=1\x00")) {
		t.Errorf("the worker's environment has no GOMAXPROCS=1: %q", env)
	}
	if pgid, err := unix.Getpgid(w); err != nil || pgid != w {
		t.Errorf("the worker's process group is %d (%v), want its own (%d)", pgid, err, w)
	}
	if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", w)); err != nil || cwd != "/" {
		t.Errorf("the worker's directory is %q (%v), want /", cwd, err)
	}
	for _, fd := range []int{4, 6} { // the job, and corkd's binary
		if target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", w, fd)); err == nil && !strings.HasPrefix(target, "anon_inode:") {
			t.Errorf("the worker still holds fd %d: %s", fd, target)
		}
	}
	f.stop(t)
	termtest.WaitFor(t, "the worker to end with its forward", 10*time.Second, func() bool { return len(workers(a.cmd.Process.Pid)) == 0 })
}

// forwardPeer opens a forwarding connection to corkd's socket as this
// process's uid, and speaks the protocol on it.
func forwardPeer(t *testing.T, sock string) *prototest.Peer {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	p := prototest.NewPeer(t, c)
	p.Hello()
	p.Send(protocol.TypeForward, &protocol.Forward{})
	p.Expect(protocol.TypeForwarding)
	return p
}

// openStream opens stream id to a TCP address in the guest and returns
// whether it opened, or why not.
func openStream(t *testing.T, p *prototest.Peer, id uint32, addr string) (bool, string) {
	t.Helper()
	p.Conn.Write(protocol.AppendStream(nil, protocol.TypeStreamOpen, &protocol.StreamFrame{ID: id, Window: 1 << 16, Network: protocol.NetTCP, Address: addr}))
	for {
		typ, payload, err := p.R.Next()
		if err != nil {
			t.Fatal(err)
		}
		if typ == protocol.TypeStreamOpened || typ == protocol.TypeStreamRefused {
			f, _ := protocol.DecodeStream(typ, payload)
			return typ == protocol.TypeStreamOpened, f.Reason
		}
	}
}

// holding serves connections that stay open until the test ends.
func holding(t *testing.T) string {
	l, port := listenTCP(t)
	held := make(chan struct{})
	t.Cleanup(func() { close(held) })
	prototest.Serve(t, l, func(c net.Conn) { <-held })
	return "127.0.0.1:" + port
}

// TestForwardStreamLimitsAcrossWorkers: --max-streams-per-uid and
// --max-streams count the streams of every worker together, as when
// corkd served them all itself; a worker's streams go back when it ends.
func TestForwardStreamLimitsAcrossWorkers(t *testing.T) {
	a := startAgent(t, "--max-streams-per-uid", "2", "--max-streams", "3")
	addr := holding(t)
	var opened []string
	var refusal string
	var first *prototest.Peer
	for i := range 3 { // three forwarding connections, as one uid (root)
		p := forwardPeer(t, a.sock())
		if i == 0 {
			first = p
		}
		for _, id := range []uint32{1, 3} {
			if ok, reason := openStream(t, p, id, addr); ok {
				opened = append(opened, fmt.Sprintf("conn %d stream %d", i, id))
			} else {
				refusal = reason
			}
		}
	}
	if len(opened) != 2 || !strings.Contains(refusal, "--max-streams-per-uid") {
		t.Fatalf("with --max-streams-per-uid 2: opened %v; last refusal %q", opened, refusal)
	}
	// The first worker's end gives its streams back.
	first.Conn.Close()
	p := forwardPeer(t, a.sock())
	termtest.WaitFor(t, "a stream to open once the first worker is gone", 10*time.Second, func() bool {
		ok, _ := openStream(t, p, 1, addr)
		return ok
	})
}

// TestForwardUnusedLeaseGoesBack: a stream that failed leaves its worker
// holding a lease it does not use; the lease goes back to corkd, so the
// uid's other forwards get the whole limit while the first lives on.
func TestForwardUnusedLeaseGoesBack(t *testing.T) {
	a := startAgent(t, "--max-streams-per-uid", "4")
	addr := holding(t)
	l, closed := listenTCP(t)
	l.Close()
	p1 := forwardPeer(t, a.sock())
	if ok, _ := openStream(t, p1, 1, "127.0.0.1:"+closed); ok {
		t.Fatal("a stream to a closed port opened")
	}
	p2 := forwardPeer(t, a.sock())
	termtest.WaitFor(t, "the failed stream's lease to go back", 10*time.Second, func() bool {
		ok, _ := openStream(t, p2, 1, addr)
		return ok
	})
	for _, id := range []uint32{3, 5, 7} {
		if ok, reason := openStream(t, p2, id, addr); !ok {
			t.Fatalf("stream %d of 4 with --max-streams-per-uid 4, none open elsewhere: %s", id, reason)
		}
	}
}

// TestForwardWorkerEndsWithCorkd: whether corkd is stopped (SIGTERM) or
// killed, its workers end, and with them the forward's connection.
func TestForwardWorkerEndsWithCorkd(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			a := startAgent(t)
			l, port := listenTCP(t)
			prototest.Serve(t, l, counter)
			f := startForward(t, "--connect", a.url, "0:"+port)
			if got := halfClose(t, dialFrom(t, f.from[0]), []byte("x")); got != "read 1 bytes" {
				t.Fatalf("through the forward: %q", got)
			}
			ws := workers(a.cmd.Process.Pid)
			if len(ws) != 1 {
				t.Fatalf("corkd has %d forwarding workers, want 1", len(ws))
			}
			a.cmd.Process.Signal(sig)
			termtest.WaitFor(t, "the worker to end", 10*time.Second, func() bool { return !alive(ws[0]) })
			exited := make(chan error, 1)
			go func() { exited <- f.cmd.Wait() }()
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				t.Fatal("cork forward still runs 10s after its worker ended")
			}
			f.stops.Do(func() {}) // waited for above
		})
	}
}

// TestForwardFramesSentAheadReachTheWorker: a peer that sends its open
// with its hello and Forward, in one write, before any answer: the bytes
// corkd read past the Forward go to the worker, and the stream opens.
func TestForwardFramesSentAheadReachTheWorker(t *testing.T) {
	a := startAgent(t)
	l, port := listenTCP(t)
	prototest.Serve(t, l, counter)
	c, err := net.Dial("unix", a.sock())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	var ahead bytes.Buffer
	w := protocol.NewWriter(&ahead)
	w.WriteJSON(protocol.TypeHello, &protocol.Hello{MinVersion: protocol.MinVersion, MaxVersion: protocol.MaxVersion, Software: "ahead"})
	w.WriteJSON(protocol.TypeForward, &protocol.Forward{})
	ahead.Write(protocol.AppendStream(nil, protocol.TypeStreamOpen, &protocol.StreamFrame{ID: 1, Window: 1 << 16, Network: protocol.NetTCP, Address: "127.0.0.1:" + port}))
	if _, err := c.Write(ahead.Bytes()); err != nil {
		t.Fatal(err)
	}
	p := prototest.NewPeer(t, c)
	p.Expect(protocol.TypeHello)
	p.Expect(protocol.TypeForwarding)
	if f, err := protocol.DecodeStream(protocol.TypeStreamOpened, p.Expect(protocol.TypeStreamOpened)); err != nil || f.ID != 1 {
		t.Fatalf("stream-opened %+v, %v", f, err)
	}
	frames := protocol.AppendStream(nil, protocol.TypeStreamData, &protocol.StreamFrame{ID: 1, Data: []byte("ahead")})
	c.Write(protocol.AppendStream(frames, protocol.TypeStreamEOF, &protocol.StreamFrame{ID: 1}))
	var back []byte
	for {
		typ, payload, err := p.R.Next()
		if err != nil {
			t.Fatalf("after %q: %v", back, err)
		}
		if typ == protocol.TypeStreamEOF {
			break
		}
		if typ == protocol.TypeStreamData {
			f, _ := protocol.DecodeStream(typ, payload)
			back = append(back, f.Data...)
		}
	}
	if string(back) != "read 5 bytes" {
		t.Fatalf("the service answered %q, want %q", back, "read 5 bytes")
	}
}

// TestInheritedDescriptorsStayWithCorkd: a descriptor corkd's starter
// left open without close-on-exec reaches neither a session's program nor
// a forwarding worker.
func TestInheritedDescriptorsStayWithCorkd(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	sock := filepath.Join(bin.Dir, fmt.Sprintf("corkd-%d.sock", time.Now().UnixNano()))
	cmd := exec.Command(bin.Corkd, "serve", "--listen", "unix://"+sock)
	cmd.ExtraFiles = []*os.File{nil, nil, nil, nil, nil, nil, w} // fd 9
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited; os.Remove(sock) })
	if err := harness.WaitListening(sock, exited, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	out, code := corkCmd("exec", "--connect", "unix://"+sock, "--", "sh", "-c", `test -e /proc/$$/fd/9 && echo held || echo clean`)
	if code != 0 || strings.TrimSpace(out) != "clean" {
		t.Errorf("the session's program: exit %d, %q; want clean", code, out)
	}
	l, port := listenTCP(t)
	prototest.Serve(t, l, counter)
	f := startForward(t, "--connect", "unix://"+sock, "0:"+port)
	halfClose(t, dialFrom(t, f.from[0]), []byte("x"))
	for _, pid := range workers(cmd.Process.Pid) {
		if target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/9", pid)); err == nil && strings.HasPrefix(target, "pipe:") {
			t.Errorf("the worker holds corkd's inherited fd 9: %s", target)
		}
	}
}
