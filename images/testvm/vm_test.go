// Package testvm boots cork's test VM under QEMU and checks cork across a
// real VM boundary. It runs only when CORK_TESTVM names a directory built by
// images/testvm/build.sh (make vm-test does both).
//
// The host side never dials vsock: CID 2 on the test machines is their own
// hypervisor. It dials only the unix socket of QEMU's virtio-serial chardev;
// vsock is exercised inside the guest, on loopback CID 1.
package testvm

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corkvm/cork/host/e2e/harness"
	"github.com/corkvm/cork/host/e2e/termtest"
)

// bootTimeout bounds the whole VM's life; QEMU always runs under it.
const bootTimeout = 100 * time.Second

type vm struct {
	dir     string
	serial  string // the host end of the virtio-serial port
	console *harness.Buffer
	cmd     *exec.Cmd
	exited  chan struct{}
}

func boot(t *testing.T, image string) *vm {
	t.Helper()
	v := &vm{dir: t.TempDir(), console: &harness.Buffer{}, exited: make(chan struct{})}
	v.serial = filepath.Join(v.dir, "serial.sock")
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	// run-vm holds the QEMU command line make vm-demo uses too; QEMU_ACCEL
	// passes through.
	v.cmd = exec.CommandContext(ctx, "./run-vm", image, "test", v.serial)
	v.cmd.Stdout, v.cmd.Stderr = v.console, v.console
	start := time.Now()
	if err := v.cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting qemu: %v", err)
	}
	go func() {
		v.cmd.Wait()
		close(v.exited)
	}()
	t.Cleanup(func() {
		cancel()
		<-v.exited
		if t.Failed() {
			t.Logf("console:\n%s", strings.ReplaceAll(v.console.String(), "\r", ""))
		}
	})
	v.waitConsole(t, "VMCHECK BOOTED")
	t.Logf("booted in %v (QEMU start to init)", time.Since(start).Round(time.Millisecond))
	return v
}

func (v *vm) waitConsole(t *testing.T, s string) {
	t.Helper()
	termtest.WaitFor(t, "the VM to print "+s, bootTimeout, func() bool {
		select {
		case <-v.exited:
			t.Fatalf("QEMU exited before %s", s)
		default:
		}
		return strings.Contains(v.console.String(), s)
	})
}

var (
	checkLine = regexp.MustCompile(`VMCHECK (PASS|FAIL) (\S+) (.*)`)
	doneLine  = regexp.MustCompile(`VMCHECK DONE pass=(\d+) fail=(\d+)`)
)

func TestVM(t *testing.T) {
	image := os.Getenv("CORK_TESTVM")
	if image == "" {
		t.Skip("CORK_TESTVM is not set: make vm-test builds the VM and runs this")
	}
	cork := filepath.Join(t.TempDir(), "cork")
	if out, err := exec.Command("go", "build", "-o", cork, "github.com/corkvm/cork/host/cmd/cork").CombinedOutput(); err != nil {
		t.Fatalf("building cork: %v\n%s", err, out)
	}
	start := time.Now()
	v := boot(t, image)

	// 1. Inside the guest, over AF_VSOCK loopback: vmcheck's verdicts.
	v.waitConsole(t, "VMCHECK DONE")
	t.Run("guest", func(t *testing.T) {
		console := strings.ReplaceAll(v.console.String(), "\r", "")
		n := 0
		for _, m := range checkLine.FindAllStringSubmatch(console, -1) {
			n++
			t.Run(m[2], func(t *testing.T) {
				if m[1] != "PASS" {
					t.Errorf("%s", m[3])
				}
				t.Log(m[3])
			})
		}
		// vmcheck's own count: a check that died before its verdict
		// line would otherwise go unnoticed.
		var pass, fail int
		done := doneLine.FindStringSubmatch(console)
		if done == nil {
			t.Fatal("no VMCHECK DONE line")
		}
		fmt.Sscan(done[1], &pass)
		fmt.Sscan(done[2], &fail)
		if n != pass+fail || fail != 0 {
			t.Fatalf("%d verdict lines, vmcheck counted pass=%d fail=%d", n, pass, fail)
		}
	})
	v.waitConsole(t, "VMCHECK READY")

	// 2. From the host, through the virtio-serial port: the host's cork.
	serial := "unix://" + v.serial
	t.Run("host/serial-tty-size-as-node", func(t *testing.T) {
		tm := termtest.Start(t, 37, 111, cork, "exec", "--connect", serial, "-t", "-u", "node", "--", "sh", "-c", "echo \"$(id -un) $(stty size)\"")
		tm.WaitLine(t, "stty size", func(l string) bool { return strings.HasPrefix(l, "node ") })
		if code := tm.Wait(t); code != 0 || !strings.Contains(tm.Out.String(), "node 37 111") {
			t.Fatalf("exit %d, output %q; want node 37 111", code, tm.Out.String())
		}
	})
	t.Run("host/serial-resize", func(t *testing.T) {
		tm := termtest.Start(t, 30, 90, cork, "exec", "--connect", serial, "-it", "-u", "node", "--", "/usr/local/bin/probe")
		tm.WaitLine(t, "the probe to start", func(l string) bool { return strings.HasPrefix(l, "start 30 90 ") })
		tm.SetSize(t, 45, 160)
		tm.WaitLine(t, "SIGWINCH with 45x160", func(l string) bool { return strings.HasPrefix(l, "winch 45 160 ") })
		tm.Write(t, "q\n")
		if code := tm.Wait(t); code != 0 {
			t.Fatalf("exit %d", code)
		}
	})
	t.Run("host/serial-pipes-8MiB-both-ways", func(t *testing.T) {
		in := make([]byte, 8<<20)
		rand.Read(in)
		cmd := exec.Command(cork, "exec", "--connect", serial, "-i", "--", "sh", "-c",
			"md5sum >&2; head -c 8388608 /dev/urandom >/tmp/out; md5sum </tmp/out >&2; cat /tmp/out")
		cmd.Stdin = bytes.NewReader(in)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		hash := md5.New()
		stdout, _ := cmd.StdoutPipe()
		began := time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		n, _ := io.Copy(hash, stdout)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("%v: %s", err, stderr.String())
		}
		sums := strings.Fields(stderr.String())
		wantIn, gotOut := fmt.Sprintf("%x", md5.Sum(in)), fmt.Sprintf("%x", hash.Sum(nil))
		if len(sums) < 4 || sums[0] != wantIn || sums[2] != gotOut || n != 8<<20 {
			t.Fatalf("checksums: guest read %v (host sent %s); guest sent %v, host got %s (%d bytes)", sums, wantIn, sums[2:], gotOut, n)
		}
		t.Logf("16 MiB through virtio-serial in %v", time.Since(began).Round(time.Millisecond))
	})
	t.Run("host/serial-copy-tree-as-node", func(t *testing.T) { copyTreeThrough(t, cork, serial) })
	t.Run("host/serial-copy-full-disk", func(t *testing.T) {
		big := filepath.Join(t.TempDir(), "big")
		os.WriteFile(big, make([]byte, 4<<20), 0o644)
		cmd := exec.Command(cork, "cp", "--connect", serial, big, ":/mnt/small/")
		out, _ := cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(string(out), "no space left") {
			t.Fatalf("a 4 MiB file onto a 1 MiB disk: exit %d: %s", code, out)
		}
		left, err := exec.Command(cork, "exec", "--connect", serial, "--", "ls", "-A", "/mnt/small").CombinedOutput()
		if err != nil || len(bytes.TrimSpace(left)) != 0 {
			t.Fatalf("left on the full disk: %q, %v", left, err)
		}
	})
	t.Run("host/serial-forward-to-guest-listener", func(t *testing.T) { forwardThrough(t, cork, serial) })
	t.Logf("VM test took %v", time.Since(start).Round(time.Millisecond))
}

// forwardThrough starts an echo service on the guest's loopback (busybox
// nc, a cat per connection), carries host connections to it with cork
// forward over the serial port, and compares what comes back, several
// connections at once on the one forward.
func forwardThrough(t *testing.T, cork, serial string) {
	// 9000 is 0x2328: wait until /proc/net/tcp or tcp6 lists it listening (0A).
	start := `setsid nc -ll -p 9000 -e cat </dev/null >/dev/null 2>&1 &
for i in $(seq 200); do grep -q ':2328 0*:0000 0A' /proc/net/tcp /proc/net/tcp6 && exit 0; sleep 0.05; done; echo no listener on 9000; exit 1`
	if out, err := exec.Command(cork, "exec", "--connect", serial, "-u", "node", "--", "sh", "-c", start).CombinedOutput(); err != nil {
		t.Fatalf("starting the guest's echo service: %v: %s", err, out)
	}
	fw := exec.Command(cork, "forward", "--connect", serial, "0:9000")
	stderr := &harness.Buffer{}
	fw.Stderr = stderr
	stdout, _ := fw.StdoutPipe()
	if err := fw.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	from, _, ok := strings.Cut(strings.TrimPrefix(line, "Forwarding from "), " -> ")
	if err != nil || !ok {
		fw.Process.Kill()
		t.Fatalf("cork forward: %q, %v; stderr: %s", line, err, stderr.String())
	}
	began := time.Now()
	errs := make(chan error, 4)
	for i := range 4 {
		go func() { errs <- echoThrough(from, 2<<20, i) }()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	t.Logf("4 connections of 2 MiB each way through cork forward in %v", time.Since(began).Round(time.Millisecond))
	fw.Process.Signal(syscall.SIGINT)
	if err := fw.Wait(); err != nil {
		t.Errorf("cork forward after SIGINT: %v; stderr: %s", err, stderr.String())
	}
}

// echoThrough sends n random bytes to addr, half closes, and checks that
// the same bytes come back.
func echoThrough(addr string, n, i int) error {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	msg := make([]byte, n)
	rand.Read(msg)
	go func() {
		c.Write(msg)
		c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, msg) {
		return fmt.Errorf("connection %d: %d bytes back of %d, equal %v, %v", i, len(got), n, bytes.Equal(got, msg), err)
	}
	return nil
}

// copyTreeThrough copies a tree into the guest as node with cork cp, and
// back out keeping owners (-a): the copy that comes back must equal the
// tree byte for byte, with its modes and links, and belong to node.
func copyTreeThrough(t *testing.T, cork, serial string) {
	src := filepath.Join(t.TempDir(), "tree")
	big := make([]byte, 1<<20+3)
	rand.Read(big)
	for name, f := range map[string]struct {
		data []byte
		mode os.FileMode
	}{
		"a.txt": {[]byte("hello\n"), 0o644}, "bin/run.sh": {[]byte("#!/bin/sh\n"), 0o755}, "private": {[]byte("p"), 0o600},
		"bin/deep/big.bin": {big, 0o640}, "new\nline \xff": {[]byte("odd"), 0o644}, "empty": {nil, 0o644},
	} {
		p := filepath.Join(src, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, f.data, f.mode)
		os.Chmod(p, f.mode)
	}
	os.Chmod(filepath.Join(src, "bin", "deep"), 0o750)
	os.Symlink("../a.txt", filepath.Join(src, "bin", "link"))

	if out, err := exec.Command(cork, "cp", "--connect", serial, "-u", "node", src, ":/home/node/").CombinedOutput(); err != nil {
		t.Fatalf("cp in: %v: %s", err, out)
	}
	owners, err := exec.Command(cork, "exec", "--connect", serial, "--", "sh", "-c", "find /home/node/tree -exec stat -c %u:%g {} + | sort -u").CombinedOutput()
	if err != nil || strings.TrimSpace(string(owners)) != "1000:1000" {
		t.Fatalf("owners in the guest: %q, %v; want node's alone, 1000:1000", owners, err)
	}
	back := t.TempDir()
	if out, err := exec.Command(cork, "cp", "--connect", serial, "-a", ":/home/node/tree", back).CombinedOutput(); err != nil {
		t.Fatalf("cp out: %v: %s", err, out)
	}
	n := 0
	filepath.Walk(src, func(p string, want os.FileInfo, walkErr error) error {
		if walkErr != nil {
			t.Errorf("walk %q: %v", p, walkErr)
			return nil
		}
		rel, _ := filepath.Rel(src, p)
		got, err := os.Lstat(filepath.Join(back, "tree", rel))
		if err != nil {
			t.Errorf("%q: %v", rel, err)
			return nil
		}
		n++
		if got.Mode() != want.Mode() {
			t.Errorf("%q: mode %v, want %v", rel, got.Mode(), want.Mode())
		}
		if uid, gid := ownerOf(got); uid != 1000 || gid != 1000 {
			t.Errorf("%q: owned by %d:%d, want node's 1000:1000 (-a)", rel, uid, gid)
		}
		switch {
		case want.Mode().IsRegular():
			a, _ := os.ReadFile(p)
			b, _ := os.ReadFile(filepath.Join(back, "tree", rel))
			if !bytes.Equal(a, b) {
				t.Errorf("%q: the bytes differ", rel)
			}
		case want.Mode()&os.ModeSymlink != 0:
			a, _ := os.Readlink(p)
			b, _ := os.Readlink(filepath.Join(back, "tree", rel))
			if a != b {
				t.Errorf("%q: link to %q, want %q", rel, b, a)
			}
		}
		return nil
	})
	if n < 10 {
		t.Fatalf("compared %d entries", n)
	}
}

func ownerOf(fi os.FileInfo) (uint32, uint32) {
	st := fi.Sys().(*syscall.Stat_t)
	return st.Uid, st.Gid
}
