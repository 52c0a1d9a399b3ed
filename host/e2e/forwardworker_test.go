//go:build linux

package e2e

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corkvm/cork/host/e2e/termtest"
	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/prototest"
)

// corkd serves each forwarding connection on a socket in a worker of its
// own: a child running as the forward's user, at one P.

// workers lists corkd's forwarding workers, the children of pid.
func workers(pid int) []int {
	var ws []int
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		child, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child))
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", child))
		// stat: pid (comm) state ppid ...
		_, rest, _ := strings.Cut(string(stat), ") ")
		if f := strings.Fields(rest); len(f) > 1 && f[1] == strconv.Itoa(pid) && bytes.HasPrefix(cmdline, []byte("corkd\x00forward-worker\x00")) {
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

// TestForwardWorkerRunsAsTheUser: a forward as a user is served by one
// worker, every one of its ids the user's, with one P; it ends with the
// forward.
func TestForwardWorkerRunsAsTheUser(t *testing.T) {
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
	id := strconv.Itoa(u.uid)
	if got, want := statusLine(t, ws[0], "Uid:"), strings.Join([]string{"Uid:", id, id, id, id}, " "); got != want {
		t.Errorf("the worker's %s, want %s", got, want)
	}
	if env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", ws[0])); !bytes.Contains(env, []byte("GOMAXPROCS=1\x00")) {
		t.Errorf("the worker's environment has no GOMAXPROCS=1: %q", env)
	}
	f.stop(t)
	termtest.WaitFor(t, "the worker to end with its forward", 10*time.Second, func() bool { return len(workers(a.cmd.Process.Pid)) == 0 })
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
