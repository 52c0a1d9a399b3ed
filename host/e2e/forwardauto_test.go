//go:build linux

package e2e

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corkvm/cork/host/e2e/harness"
	"github.com/corkvm/cork/protocol/prototest"
)

// listenAsUID listens on a free port of 127.0.0.1 with a socket of uid's,
// as the kernel lists it in /proc/net/tcp: made on a thread whose
// filesystem uid is uid. The thread is never unlocked: it ends with its
// goroutine.
func listenAsUID(t *testing.T, uid int) net.Listener {
	t.Helper()
	type result struct {
		l   net.Listener
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		unix.Setfsuid(uid)
		l, err := net.Listen("tcp", "127.0.0.1:0")
		done <- result{l, err}
	}()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.l
}

// cork forward --auto follows the user's listeners: one that opens is
// forwarded and printed, one that closes is stopped; another uid's is not.
func TestForwardAuto(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes a socket of nobody's")
	}
	a := startAgent(t)
	roots, _ := listenTCP(t) // root's: not nobody's to follow
	cmd := exec.Command(bin.Cork, "forward", "--auto", "--connect", a.url, "-u", "nobody")
	stderr := &harness.Buffer{}
	cmd.Stderr = stderr
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGINT)
		if err := cmd.Wait(); err != nil {
			t.Errorf("cork forward --auto after SIGINT: %v; stderr:\n%s", err, stderr.String())
		}
	})
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var seen []string
	next := func(suffix string) string {
		t.Helper()
		timeout := time.After(20 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("cork forward ended; stderr:\n%s", stderr.String())
				}
				seen = append(seen, l)
				if strings.HasSuffix(l, suffix) {
					return l
				}
			case <-timeout:
				t.Fatalf("no line ending %q within 20s; lines %q; stderr:\n%s", suffix, seen, stderr.String())
			}
		}
	}
	l := listenAsUID(t, 65534)
	prototest.Serve(t, l, counter)
	_, port, _ := net.SplitHostPort(l.Addr().String())
	line := next(" -> " + port)
	from, _, _ := strings.Cut(strings.TrimPrefix(line, "Forwarding from "), " -> ")
	if got := halfClose(t, dialFrom(t, from), []byte("to nobody's port")); got != "read 16 bytes" {
		t.Fatalf("through %s: %q", from, got)
	}
	l.Close()
	if stopped := next(" -> " + port); !strings.HasPrefix(stopped, "Stopped forwarding from "+from) {
		t.Fatalf("after the guest's listener closed: %q", stopped)
	}
	_, rootPort, _ := net.SplitHostPort(roots.Addr().String())
	for _, s := range seen {
		if strings.HasSuffix(s, " -> "+rootPort) {
			t.Fatalf("root's port followed for nobody: %q", s)
		}
	}
}
