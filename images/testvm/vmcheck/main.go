// Command vmcheck runs inside cork's test VM and checks corkd over real
// AF_VSOCK loopback (CID 1): the user switch on a PTY, a resize, exit
// statuses, a refused peer CID, and a forward served by a worker that
// connects as the user. It prints one line per check,
//
//	VMCHECK PASS name detail
//	VMCHECK FAIL name detail
//
// and a last line VMCHECK DONE pass=N fail=M, which the host parses.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corkvm/cork/guest/procfs"
	"github.com/corkvm/cork/host/client"
	"github.com/corkvm/cork/host/e2e/harness"
	"github.com/corkvm/cork/host/transport"
	"github.com/corkvm/cork/protocol"
)

// Only loopback: inside the VM that the test booted, CID 1 is this guest.
const (
	agentAddr     = "vsock://1:2675"
	refusingAddr  = "vsock://1:2676"
	refusingLog   = "/tmp/corkd-refusing.log"
	checkDeadline = 30 * time.Second
)

var pass, fail int

func report(ok bool, name, format string, a ...any) {
	verdict := "PASS"
	if ok {
		pass++
	} else {
		verdict = "FAIL"
		fail++
	}
	fmt.Printf("VMCHECK %s %s %s\n", verdict, name, strings.ReplaceAll(fmt.Sprintf(format, a...), "\n", "\\n"))
}

type result struct {
	out  string
	exit protocol.Exit
	err  error
}

func run(addr string, s *client.Session) result {
	ctx, cancel := context.WithTimeout(context.Background(), checkDeadline)
	defer cancel()
	out := &output{}
	if s.Stdout == nil {
		s.Stdout, s.Stderr = out, out
	}
	conn, err := transport.Dial(ctx, addr, transport.Options{})
	if err != nil {
		return result{err: err}
	}
	exit, err := s.Run(ctx, conn)
	return result{out.String(), exit, err}
}

func main() {
	checkBakedAgent()
	checkUserOnPTY()
	checkResize()
	checkExitCodes()
	checkRefusedCID()
	checkForwardWorker()
	fmt.Printf("VMCHECK DONE pass=%d fail=%d\n", pass, fail)
}

// checkBakedAgent: the corkd serving these checks came from cork bake's
// layer, the base image had none; it reports the version bake labelled.
func checkBakedAgent() {
	out, err := exec.Command("/usr/local/bin/corkd", "version").Output()
	report(err == nil && strings.HasPrefix(string(out), "corkd "), "baked-corkd", "%q err=%v", strings.TrimSpace(string(out)), err)
}

func checkUserOnPTY() {
	r := run(agentAddr, &client.Session{Exec: protocol.Exec{
		User: "node", TTY: true, Size: protocol.WindowSize{Cols: 100, Rows: 40},
		Argv: []string{"sh", "-c", `echo "uid=$(id -u) groups=$(id -G) home=$HOME user=$USER pwd=$(pwd) tty=$(stat -c %U:%a "$(tty)") size=$(stty size)"`},
	}})
	want := "uid=1000 groups=1000 1001 home=/home/node user=node pwd=/home/node tty=node:620 size=40 100"
	report(r.err == nil && strings.TrimSpace(r.out) == want, "vsock-tty-user-node", "%q err=%v", strings.TrimSpace(r.out), r.err)
}

func checkResize() {
	inR, inW := io.Pipe()
	sizes := client.NewSizeSlot()
	out := &output{}
	done := make(chan result, 1)
	go func() {
		done <- run(agentAddr, &client.Session{Exec: protocol.Exec{TTY: true, Stdin: true,
			Size: protocol.WindowSize{Cols: 100, Rows: 40}, Argv: []string{"/usr/local/bin/probe"}},
			Stdin: inR, Stdout: out, Stderr: out, Sizes: sizes})
	}()
	defer func() {
		inW.Write([]byte("q\n"))
		inW.Close()
		<-done
	}()
	if !out.waitFor("start 40 100") {
		report(false, "vsock-resize", "the probe did not start at 40x100: %q", out.String())
		return
	}
	sizes.Put(protocol.WindowSize{Cols: 150, Rows: 50})
	ok := out.waitFor("winch 50 150")
	report(ok, "vsock-resize", "probe output %q", out.String())
}

func checkExitCodes() {
	for _, tt := range []struct {
		argv []string
		code int
	}{
		{[]string{"true"}, 0},
		{[]string{"sh", "-c", "exit 3"}, 3},
		{[]string{"no-such-program"}, 127},
		{[]string{"/etc/passwd"}, 126},
		{[]string{"sh", "-c", "kill -INT $$"}, 130},
		{[]string{"sh", "-c", "kill -KILL $$"}, 137},
	} {
		r := run(agentAddr, &client.Session{Exec: protocol.Exec{Argv: tt.argv}})
		report(r.err == nil && r.exit.Code == tt.code, "vsock-exit-"+fmt.Sprint(tt.code), "%v: exit %d err=%v", tt.argv, r.exit.Code, r.err)
	}
}

func checkRefusedCID() {
	r := run(refusingAddr, &client.Session{Exec: protocol.Exec{Argv: []string{"true"}}})
	deadline := time.Now().Add(checkDeadline)
	logged := false
	for !logged && time.Now().Before(deadline) {
		b, _ := os.ReadFile(refusingLog)
		logged = bytes.Contains(b, []byte("refused vsock peer"))
		if !logged {
			time.Sleep(20 * time.Millisecond)
		}
	}
	report(r.err != nil && logged, "vsock-refused-cid", "session err=%v; agent logged the refusal: %v", r.err, logged)
}

// checkForwardWorker: a forward over AF_VSOCK as node is served by a
// worker of corkd's (root's, as corkd is), which connects as node: a
// unix socket's SO_PEERCRED names uid 1000. Bytes sent through it come
// back whole, and the worker goes with the connection.
func checkForwardWorker() {
	sock := "/tmp/vmcheck-echo.sock"
	os.Remove(sock)
	l, err := net.Listen("unix", sock)
	if err != nil {
		report(false, "vsock-forward-worker", "listen: %v", err)
		return
	}
	defer l.Close()
	os.Chmod(sock, 0o777)
	peers := make(chan uint32, 1)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if raw, err := c.(*net.UnixConn).SyscallConn(); err == nil {
				raw.Control(func(fd uintptr) {
					if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
						select {
						case peers <- cred.Uid:
						default:
						}
					}
				})
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), checkDeadline)
	defer cancel()
	conn, err := transport.Dial(ctx, agentAddr, transport.Options{})
	if err != nil {
		report(false, "vsock-forward-worker", "dial: %v", err)
		return
	}
	fw, err := client.Forward(conn, "vmcheck", "node")
	if err != nil {
		report(false, "vsock-forward-worker", "forward: %v", err)
		return
	}
	got, err := echoOnce(fw, protocol.NetUnix, sock, 1<<20)
	worker := workerPIDs()
	peer := uint32(1 << 31)
	select {
	case peer = <-peers:
	default:
	}
	fw.Close()
	gone := waitUntil(func() bool { return len(workerPIDs()) == 0 })
	report(err == nil && got && len(worker) == 1 && peer == 1000 && gone, "vsock-forward-worker",
		"echo whole=%v err=%v; connected as uid %d; root's workers while forwarding %v; gone after: %v", got, err, peer, worker, gone)
}

// echoOnce sends n bytes to address in the guest through fw, half
// closes, and reports whether the same bytes came back.
func echoOnce(fw *client.Forwarder, network uint8, address string, n int) (bool, error) {
	st, err := fw.Dial(network, address)
	if err != nil {
		return false, err
	}
	defer st.Close()
	sent := make([]byte, n)
	rand.Read(sent)
	go func() {
		st.Write(sent)
		st.CloseWrite()
	}()
	back, err := io.ReadAll(st)
	return bytes.Equal(back, sent), err
}

// workerPIDs lists corkd's forwarding workers, which run as root.
func workerPIDs() []int {
	var workers []int
	pids, _ := procfs.Pids()
	for _, pid := range pids {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if bytes.HasPrefix(cmdline, []byte("corkd\x00forward-worker\x00")) && bytes.Contains(status, []byte("\nUid:\t0\t0\t0\t0\n")) {
			workers = append(workers, pid)
		}
	}
	return workers
}

// waitUntil polls cond until it holds or the check deadline passes.
func waitUntil(cond func() bool) bool {
	for deadline := time.Now().Add(checkDeadline); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// output collects a session's output for another goroutine to watch.
type output struct{ harness.Buffer }

// waitFor waits, up to the check deadline, for the output to hold s.
func (b *output) waitFor(s string) bool {
	deadline := time.Now().Add(checkDeadline)
	for !strings.Contains(b.String(), s) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}
