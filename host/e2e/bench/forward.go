//go:build linux

package main

import (
	"bufio"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/corkvm/cork/host/e2e/harness"
)

// Forwarding: a TCP service on loopback (the "guest" side: corkd here
// dials this machine) reached directly (the floor), through cork forward
// and through ssh -L, the rows interleaved round by round.

var (
	fwdRounds   = flag.Int("forward-rounds", 5, "rounds of the forwarding table")
	fwdMiB      = flag.Int("forward-mib", 64, "MiB per throughput run in the forwarding table")
	fwdConnects = flag.Int("forward-connects", 50, "connections timed per round in the forwarding table")
)

// forwardRow is one way to reach the service, and its results per round.
type forwardRow struct {
	name  string
	addr  string       // where the bench connects
	procs func() []int // the forward's processes, both sides; nil for none
	stop  func()
	// Results, one per round.
	down1, up1, down8 []float64
	connect           []time.Duration
	connectCost       []procCost // over a round's connects
}

// The service's requests: one byte, then for 'd' an 8-byte count.
const (
	reqConnect  = 'c' // answer one byte
	reqDownload = 'd' // send the count's bytes, then close
	reqUpload   = 'u' // read to EOF, then answer the count read
)

// serveForwardSink runs the service on l until it is closed.
func serveForwardSink(l net.Listener) {
	zeros := make([]byte, 256<<10)
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			var req [9]byte
			if _, err := io.ReadFull(c, req[:1]); err != nil {
				return
			}
			switch req[0] {
			case reqConnect:
				c.Write([]byte{'k'})
			case reqDownload:
				io.ReadFull(c, req[1:])
				for n := int64(binary.BigEndian.Uint64(req[1:])); n > 0; {
					w, err := c.Write(zeros[:min(n, int64(len(zeros)))])
					if err != nil {
						return
					}
					n -= int64(w)
				}
			case reqUpload:
				n, _ := io.CopyBuffer(io.Discard, c, zeros)
				c.Write(binary.BigEndian.AppendUint64(nil, uint64(n)))
			}
		}()
	}
}

// download reads n bytes from the service through addr.
func download(addr string, n int) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Write(binary.BigEndian.AppendUint64([]byte{reqDownload}, uint64(n))); err != nil {
		return err
	}
	got, err := io.CopyBuffer(io.Discard, c, make([]byte, 256<<10))
	if err == nil && got != int64(n) {
		err = fmt.Errorf("read %d bytes of %d", got, n)
	}
	return err
}

// upload sends n bytes to the service through addr and waits for its
// count: the time covers the bytes' arrival.
func upload(addr string, n int) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.Write([]byte{reqUpload})
	buf := make([]byte, 256<<10)
	for left := n; left > 0; {
		w, err := c.Write(buf[:min(left, len(buf))])
		if err != nil {
			return err
		}
		left -= w
	}
	c.(*net.TCPConn).CloseWrite()
	var count [8]byte
	if _, err := io.ReadFull(c, count[:]); err != nil {
		return err
	}
	if got := binary.BigEndian.Uint64(count[:]); got != uint64(n) {
		return fmt.Errorf("the service read %d bytes of %d", got, n)
	}
	return nil
}

// connectOnce times a connection's set-up: dial, ask, and the service's
// first byte back, which through a forward means the far side's dial too.
func connectOnce(addr string) (time.Duration, error) {
	start := time.Now()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.Write([]byte{reqConnect})
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

func timedMiBps(n int, f func() error) float64 {
	start := time.Now()
	check(f())
	return mibps(n, time.Since(start))
}

// measure runs one round of every figure on the row.
func (r *forwardRow) measure(n int) {
	r.down1 = append(r.down1, timedMiBps(n, func() error { return download(r.addr, n) }))
	r.up1 = append(r.up1, timedMiBps(n, func() error { return upload(r.addr, n) }))
	r.down8 = append(r.down8, timedMiBps(n, func() error {
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for range 8 {
			wg.Go(func() { errs <- download(r.addr, n/8) })
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				return err
			}
		}
		return nil
	}))
	var lat []time.Duration
	before := r.cost()
	for range *fwdConnects {
		d, err := connectOnce(r.addr)
		check(err)
		lat = append(lat, d)
	}
	spent := r.cost().minus(before)
	r.connect = append(r.connect, median(lat))
	r.connectCost = append(r.connectCost, spent)
}

// costText is the median of the round's costs per connect.
func (r *forwardRow) costText() string {
	if r.procs == nil {
		return "–"
	}
	cpu := make([]time.Duration, len(r.connectCost))
	sw := make([]float64, len(r.connectCost))
	for i, c := range r.connectCost {
		cpu[i], sw[i] = c.cpu/time.Duration(*fwdConnects), float64(c.switches)/float64(*fwdConnects)
	}
	return fmt.Sprintf("%d, %.0f", median(cpu).Microseconds(), medianF(sw))
}

func (r *forwardRow) cost() procCost {
	if r.procs == nil {
		return procCost{}
	}
	return costOf(r.procs())
}

// startCorkForward runs cork forward to the service's port and returns
// the row that reaches it.
func startCorkForward(name, cork, url, port string, corkd int) *forwardRow {
	cmd := exec.Command(cork, "forward", "--connect", url, "0:"+port)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	check(err)
	cmd.Stderr = os.Stderr
	check(cmd.Start())
	line, err := bufio.NewReader(out).ReadString('\n')
	check(err)
	from, _, ok := strings.Cut(strings.TrimPrefix(line, "Forwarding from "), " -> ")
	if !ok {
		check(fmt.Errorf("cork forward printed %q", line))
	}
	return &forwardRow{name: name, addr: from,
		procs: func() []int { return append(withDescendants(corkd), cmd.Process.Pid) }, // corkd's forwarding worker
		stop:  func() { cmd.Process.Signal(syscall.SIGINT); cmd.Wait() }}
}

// startSSHForward runs ssh -N -L to the service's port through s.
func startSSHForward(s *sshd, name, port string, opts ...string) *forwardRow {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	local := l.Addr().String()
	l.Close()
	args := s.args(append(opts, "-N", "-o", "ExitOnForwardFailure=yes", "-L", local+":127.0.0.1:"+port, "root@127.0.0.1")...)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = os.Stderr
	check(cmd.Start())
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := connectOnce(local); err == nil {
			break
		}
		if time.Now().After(deadline) {
			check(fmt.Errorf("%s: no forward on %s within 20s", name, local))
		}
	}
	return &forwardRow{name: name, addr: local,
		procs: func() []int { return append(withDescendants(s.cmd.Process.Pid), cmd.Process.Pid) },
		stop:  func() { cmd.Process.Kill(); cmd.Wait() }}
}

// printForward prints the forwarding table.
func printForward(out io.Writer, b *harness.Binaries, a *agent) {
	progress("forward")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	defer l.Close()
	go serveForwardSink(l)
	_, port, _ := net.SplitHostPort(l.Addr().String())

	rows := []*forwardRow{{name: "floor: loopback TCP, no forward", addr: l.Addr().String(), stop: func() {}}}
	cork := startCorkForward("cork forward (unix socket to corkd)", b.Cork, a.url, port, a.Cmd.Process.Pid)
	rows = append(rows, cork)
	var skipped []string
	var ssh *forwardRow
	if s, err := startSSHD(filepath.Join(b.Dir, "forward-ssh")); err == nil {
		defer s.stop()
		ssh = startSSHForward(s, "ssh -L (OpenSSH, chacha20-poly1305)", port)
		rows = append(rows, ssh, startSSHForward(s, "ssh -L, aes128-gcm", port, "-c", "aes128-gcm@openssh.com"))
	} else {
		skipped = append(skipped, fmt.Sprintf("ssh -L: %v", err))
	}
	defer func() {
		for _, r := range rows {
			r.stop()
		}
	}()
	n := *fwdMiB << 20
	for round := range *fwdRounds {
		for _, r := range rows {
			progress("forward round %d: %s", round, r.name)
			r.measure(n)
		}
	}

	fmt.Fprintf(out, "\n### Forwarding: cork forward against ssh -L\n\n%d rounds, the rows interleaved in each; medians over the rounds, the slowest run in brackets. The service is a TCP listener on loopback in the bench process (with corkd on this machine, the guest's side is this machine too). Throughput: %d MiB per run; from guest: the service sends, as a dev server does; 8 streams: 8 connections at once, %d MiB each, the total over the wall time. Connect: dial, one byte asked and one answered, which through a forward includes the far side's dial; median of %d per round. Per connect: what the forward's processes on both sides (cork forward and corkd; ssh and sshd's) spent over a round's connects, on a CPU and in context switches, divided by the connects, median over the rounds; the bench's own client and service are not counted. ssh runs against a private sshd on loopback, as in the peers table.\n\n", *fwdRounds, *fwdMiB, *fwdMiB/8, *fwdConnects)
	fmt.Fprintln(out, "| | from guest, 1 stream MiB/s | to guest, 1 stream MiB/s | from guest, 8 streams MiB/s | connect ms (slowest round) | per connect: CPU µs, context switches |")
	fmt.Fprintln(out, "|---|---|---|---|---|---|")
	for _, r := range rows {
		fmt.Fprintf(out, "| %s | %.0f (%.0f) | %.0f (%.0f) | %.0f (%.0f) | %s (%s) | %s |\n", r.name,
			medianF(r.down1), slices.Min(r.down1), medianF(r.up1), slices.Min(r.up1), medianF(r.down8), slices.Min(r.down8),
			ms(median(r.connect)), ms(slices.Max(r.connect)), r.costText())
	}
	if ssh != nil {
		fmt.Fprintf(out, "\ncork forward ÷ ssh -L (default cipher), medians: from guest %.2f, to guest %.2f, 8 streams %.2f (over 1 is better); connect %.2f (under 1 is better).\n",
			medianF(cork.down1)/medianF(ssh.down1), medianF(cork.up1)/medianF(ssh.up1), medianF(cork.down8)/medianF(ssh.down8),
			ratio(median(cork.connect), median(ssh.connect)))
	}
	for _, s := range skipped {
		fmt.Fprintf(out, "\nSkipped: %s\n", s)
	}
}
