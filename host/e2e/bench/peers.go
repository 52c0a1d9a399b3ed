//go:build linux

package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/corkvm/cork/host/e2e/harness"
)

// Peers: what users run when they do not run cork. ssh (lima and most VM
// tools give shells over ssh), with its default cipher, with aes128-gcm,
// and through a ControlMaster; and a container engine's exec (podman with
// runc). Every peer is measured on every column, the rows interleaved round
// by round so that the noise of a shared machine falls on all alike.

var (
	peerRounds = flag.Int("peer-rounds", 5, "rounds of the peers table")
	peerMiB    = flag.Int("peer-mib", 64, "MiB per throughput run in the peers table")
	peerFilter = flag.String("peer-filter", "", "measure only the peers whose name holds this (and the floor)")
	peerResize = flag.Bool("peer-resize-only", false, "measure only resizes in the peers table")
	otherCorkd = flag.String("other-corkd", "", "a corkd binary measured as a row of its own in the peers table, beside the one built from this tree: before and after a change, in one run")
)

// peer runs programs the way one tool does.
type peer struct {
	name  string
	tty   func(args ...string) []string // on a terminal the tool makes (resize, tty output)
	pipe  func(args ...string) []string // on pipes, stdin forwarded
	probe string                        // the probe, as the peer's programs find it
	// Results, one per round.
	p50, p99, startup       []time.Duration
	pipeOut, pipeIn, ttyOut []float64
	// noResize marks a peer that cannot resize (the bare relay pair):
	// its resize cells stay empty.
	noResize bool
}

// sshd is a private OpenSSH server on loopback: its own config, host key
// and client key, root by key only, no PAM.
type sshd struct {
	dir, key, port string
	cmd            *exec.Cmd
	madeRun        bool
}

// startSSHD starts sshd in a mount namespace of its own where root's
// ~/.bashrc is empty: Debian's bash reads it for every command ssh runs,
// and root's on these machines runs a slow shell init, which would be
// timed as ssh's start-up.
func startSSHD(dir string) (*sshd, error) {
	s := &sshd{dir: dir, key: filepath.Join(dir, "client_key")}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	for _, k := range []string{"host_key", "client_key"} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, k)).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ssh-keygen: %v: %s", err, out)
		}
	}
	pub, err := os.ReadFile(s.key + ".pub")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.port = strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	config := fmt.Sprintf(`Port %s
ListenAddress 127.0.0.1
HostKey %s/host_key
PidFile %s/sshd.pid
AuthorizedKeysFile %s/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
PrintLastLog no
MaxStartups 100
MaxSessions 100
`, s.port, dir, dir, dir)
	cfg := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		return nil, err
	}
	if _, err := os.Stat("/run/sshd"); err != nil {
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			return nil, err
		}
		s.madeRun = true
	}
	empty := filepath.Join(dir, "empty_bashrc")
	os.WriteFile(empty, nil, 0o644)
	sshdPath, err := exec.LookPath("sshd")
	if err != nil {
		sshdPath = "/usr/sbin/sshd"
	}
	script := fmt.Sprintf("exec %s -D -e -f %s", sshdPath, cfg)
	if u, err := user.Lookup("root"); err == nil {
		if _, err := os.Stat(filepath.Join(u.HomeDir, ".bashrc")); err == nil {
			script = fmt.Sprintf("mount --bind %s %s/.bashrc && %s", empty, u.HomeDir, script)
		}
	}
	s.cmd = exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script)
	// A bench that is killed takes its sshd with it (the exec keeps it).
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	s.cmd.Stderr, _ = os.Create(filepath.Join(dir, "sshd.log"))
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", "127.0.0.1:"+s.port)
		if err == nil {
			c.Close()
			break
		}
		if i > 500 {
			s.stop()
			return nil, fmt.Errorf("sshd did not listen; see %s/sshd.log", dir)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return s, nil
}

func (s *sshd) stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	s.cmd.Wait()
	if s.madeRun {
		os.Remove("/run/sshd")
	}
}

func (s *sshd) args(extra ...string) []string {
	return append([]string{"ssh", "-F", "/dev/null", "-i", s.key, "-p", s.port, "-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes"}, extra...)
}

func (s *sshd) peer(name string, opts ...string) *peer {
	return &peer{name: name,
		tty: func(a ...string) []string {
			return append(s.args(append(opts, "-tt", "root@127.0.0.1", "--")...), a...)
		},
		pipe:  func(a ...string) []string { return append(s.args(append(opts, "root@127.0.0.1", "--")...), a...) },
		probe: "",
	}
}

// podmanPeer runs a container of a small image (busybox and the probe)
// and execs into it.
type podmanPeer struct {
	root string
	name string
}

func (p *podmanPeer) args(a ...string) []string {
	return append([]string{"podman", "--root", p.root + "/storage", "--runroot", p.root + "/run",
		"--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--runtime", "runc", "--events-backend", "none"}, a...)
}

func startPodman(dir, probe string) (*podmanPeer, error) {
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		return nil, fmt.Errorf("no busybox (apt-get install busybox-static) for the container image")
	}
	root, err := os.MkdirTemp("", "podman") // podman refuses a long runroot
	if err != nil {
		return nil, err
	}
	p := &podmanPeer{root: root, name: "cork-bench"}
	img := filepath.Join(dir, "image")
	os.MkdirAll(filepath.Join(img, "bin"), 0o755)
	copyFile(busybox, filepath.Join(img, "bin", "busybox"))
	for _, l := range []string{"sh", "cat", "head", "sleep", "true"} {
		os.Symlink("busybox", filepath.Join(img, "bin", l))
	}
	copyFile(probe, filepath.Join(img, "probe"))
	tarball := filepath.Join(dir, "image.tar")
	steps := [][]string{
		{"tar", "-C", img, "-cf", tarball, "."},
		p.args("import", "--change", "ENV=PATH=/bin", tarball, "localhost/cork-bench"),
		p.args("run", "-d", "--name", p.name, "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768",
			"localhost/cork-bench", "/bin/sleep", "100000"),
	}
	for _, s := range steps {
		if out, err := exec.Command(s[0], s[1:]...).CombinedOutput(); err != nil {
			p.stop()
			return nil, fmt.Errorf("%v: %v: %s", s, err, out)
		}
	}
	return p, nil
}

func (p *podmanPeer) stop() {
	exec.Command(p.args("rm", "-f", "-t", "0", p.name)[0], p.args("rm", "-f", "-t", "0", p.name)[1:]...).Run()
	os.RemoveAll(p.root)
}

func (p *podmanPeer) peer() *peer {
	return &peer{name: "podman exec (runc)",
		tty:   func(a ...string) []string { return append(p.args("exec", "-it", p.name), a...) },
		pipe:  func(a ...string) []string { return append(p.args("exec", "-i", p.name), a...) },
		probe: "/probe",
	}
}

func copyFile(src, dst string) {
	b, err := os.ReadFile(src)
	check(err)
	check(os.WriteFile(dst, b, 0o755))
}

// measureResize runs the probe on the peer's terminal and returns the
// latencies of n single resizes.
func (p *peer) measureResize(probe string, n int) []time.Duration {
	t := startTerminal(24, 80, nil, p.tty(probe)...)
	defer t.quit()
	if _, ok := t.next("start", 60*time.Second); !ok {
		check(fmt.Errorf("%s: the probe did not start", p.name))
	}
	var lat []time.Duration
	for i := 0; i < n; i++ {
		rows, cols := 20+i%40, 60+(i*7)%120
		at := t.setSize(rows, cols)
		for {
			rep, ok := t.next("winch", 5*time.Second)
			if !ok {
				break
			}
			if rep.rows == rows && rep.cols == cols {
				lat = append(lat, time.Duration(rep.ns-at))
				break
			}
		}
	}
	return lat
}

// corkPeer runs programs through cork exec, reaching corkd by the flags in
// via.
func corkPeer(name, cork string, via ...string) *peer {
	run := func(mode string, x []string) []string {
		args := append([]string{cork, "exec", mode}, via...)
		return append(append(args, "--"), x...)
	}
	return &peer{name: name,
		tty:  func(x ...string) []string { return run("-it", x) },
		pipe: func(x ...string) []string { return run("-i", x) }}
}

// printPeers prints the peers table: every column for every row.
func printPeers(out io.Writer, b *harness.Binaries, a *agent) {
	progress("peers")
	dir := filepath.Join(b.Dir, "peers")
	check(os.MkdirAll(dir, 0o755))
	floor := &peer{name: "floor: no tool", tty: func(a ...string) []string { return a }, pipe: func(a ...string) []string { return a }}
	corkUnix := corkPeer("cork, unix socket", b.Cork, "--connect", a.url)
	corkMachine := corkPeer("cork --machine (smolvm stand-in)", b.Cork, "--machine", "m", "--smolvm", b.Standin, "--agent", b.Corkd)
	// The bare relay pair is the ceiling for any agent and client: the
	// same two processes on the path as cork, relaying bytes and nothing
	// else.
	bareSock := filepath.Join(dir, "barerelay.sock")
	bare := exec.Command(b.Barerelay, "serve", bareSock)
	check(bare.Start())
	bareExited := make(chan struct{})
	go func() { bare.Wait(); close(bareExited) }()
	defer func() { bare.Process.Kill(); <-bareExited }()
	if err := harness.WaitListening(bareSock, bareExited, 10*time.Second); err != nil {
		check(fmt.Errorf("barerelay %w", err))
	}
	bareRelay := &peer{name: "bare relay pair (io.Copy, no protocol): the ceiling", noResize: true,
		tty:  func(x ...string) []string { return append([]string{b.Barerelay, "-t", bareSock, "--"}, x...) },
		pipe: func(x ...string) []string { return append([]string{b.Barerelay, bareSock, "--"}, x...) }}
	peers := []*peer{floor, bareRelay, corkUnix, corkMachine}
	var other *peer
	if *otherCorkd != "" {
		oa := startAgent(*otherCorkd, filepath.Join(dir, "other-corkd"))
		defer oa.stop()
		other = corkPeer("cork, unix socket, "+*otherCorkd, b.Cork, "--connect", oa.url)
		peers = append(peers, other)
	}

	var skipped []string
	if _, err := exec.LookPath("sshd"); err == nil || fileExists("/usr/sbin/sshd") {
		if s, err := startSSHD(filepath.Join(dir, "ssh")); err == nil {
			defer s.stop()
			peers = append(peers, s.peer("ssh -tt (OpenSSH, chacha20-poly1305)"), s.peer("ssh, aes128-gcm", "-c", "aes128-gcm@openssh.com"))
			cm := filepath.Join(dir, "ssh", "cm.sock")
			master := exec.Command(s.args("-M", "-S", cm, "-o", "ControlPersist=yes", "-fN", "root@127.0.0.1")[0],
				s.args("-M", "-S", cm, "-o", "ControlPersist=yes", "-fN", "root@127.0.0.1")[1:]...)
			if out, err := master.CombinedOutput(); err == nil {
				defer exec.Command(s.args("-S", cm, "-O", "exit", "root@127.0.0.1")[0], s.args("-S", cm, "-O", "exit", "root@127.0.0.1")[1:]...).Run()
				peers = append(peers, s.peer("ssh through a ControlMaster", "-S", cm))
			} else {
				skipped = append(skipped, fmt.Sprintf("ssh ControlMaster: %v %s", err, out))
			}
		} else {
			skipped = append(skipped, fmt.Sprintf("ssh: %v", err))
		}
	} else {
		skipped = append(skipped, "ssh: sshd is not installed (apt-get install openssh-server)")
	}
	if _, err := exec.LookPath("podman"); err == nil {
		if p, err := startPodman(filepath.Join(dir, "podman"), b.Probe); err == nil {
			defer p.stop()
			peers = append(peers, p.peer())
		} else {
			skipped = append(skipped, fmt.Sprintf("podman: %v", err))
		}
	} else {
		skipped = append(skipped, "podman: not installed (apt-get install podman runc)")
	}

	// Resizes only: the pair, which cannot resize, would have no figures.
	peers = slices.DeleteFunc(peers, func(p *peer) bool {
		if *peerResize && p.noResize {
			return true
		}
		return *peerFilter != "" && p != floor && p != bareRelay && p != corkUnix && p != other && !strings.Contains(p.name, *peerFilter)
	})
	n := *peerMiB << 20
	count := strconv.Itoa(n)
	for round := range *peerRounds {
		for _, p := range peers {
			probe := probeFor(b, p)
			progress("peers round %d: %s", round, p.name)
			if !p.noResize {
				lat := p.measureResize(probe, 100)
				p.p50, p.p99 = append(p.p50, median(lat)), append(p.p99, percentile(lat, 0.99))
			}
			if *peerResize {
				p.startup, p.pipeOut, p.pipeIn, p.ttyOut = append(p.startup, 1), append(p.pipeOut, 1), append(p.pipeIn, 1), append(p.ttyOut, 1)
				continue
			}
			var st []time.Duration
			for range 5 {
				args := p.pipe("true")
				st = append(st, timed(exec.Command(args[0], args[1:]...)))
			}
			p.startup = append(p.startup, median(st))
			p.pipeOut = append(p.pipeOut, mibps(n, drainRun(n, p.pipe("head", "-c", count, "/dev/zero")...)))
			p.pipeIn = append(p.pipeIn, mibps(n, feedRun(n, p.pipe("sh", "-c", "cat >/dev/null")...)))
			p.ttyOut = append(p.ttyOut, mibps(n, ptyRun(n, p.tty("head", "-c", count, "/dev/zero")...)))
		}
	}

	fmt.Fprintf(out, "\n### Against the tools users would pick instead\n\n%d rounds, the rows interleaved in each; medians over the rounds. Resize: 100 single resizes per round, as above. Start-up: `true`, median of 5 per round. Throughput: %d MiB per run. ssh runs against a private sshd on loopback (root by key, no PAM) started with root's `~/.bashrc` emptied in a mount namespace of its own: Debian's bash reads it for every command ssh runs, and root's here runs a slow shell init (pyenv), which would otherwise be timed as ssh's start-up.\n\n", *peerRounds, *peerMiB)
	fmt.Fprintln(out, "| | resize p50 ms | resize p99 ms | start-up `true` ms | pipe out MiB/s (slowest run) | pipe in MiB/s (slowest) | tty out MiB/s (slowest) |")
	fmt.Fprintln(out, "|---|---|---|---|---|---|---|")
	for _, p := range peers {
		p50, p99 := p.resizeCells()
		fmt.Fprintf(out, "| %s | %s | %s | %s | %.0f (%.0f) | %.0f (%.0f) | %.0f (%.0f) |\n", p.name, p50, p99, ms(median(p.startup)),
			medianF(p.pipeOut), slices.Min(p.pipeOut), medianF(p.pipeIn), slices.Min(p.pipeIn), medianF(p.ttyOut), slices.Min(p.ttyOut))
	}
	fmt.Fprintf(out, "\ncork (unix socket) ÷ peer, medians (under 1 is better for times, over 1 for MiB/s):\n\n")
	fmt.Fprintln(out, "| peer | resize p50 | resize p99 | start-up | pipe out | pipe in | tty out |")
	fmt.Fprintln(out, "|---|---|---|---|---|---|---|")
	c := corkUnix
	for _, p := range peers {
		if p == c {
			continue
		}
		p50, p99 := "", ""
		if !p.noResize {
			p50, p99 = fmt.Sprintf("%.2f", ratio(median(c.p50), median(p.p50))), fmt.Sprintf("%.2f", ratio(median(c.p99), median(p.p99)))
		}
		fmt.Fprintf(out, "| %s | %s | %s | %.2f | %.2f | %.2f | %.2f |\n", p.name, p50, p99, ratio(median(c.startup), median(p.startup)),
			medianF(c.pipeOut)/medianF(p.pipeOut), medianF(c.pipeIn)/medianF(p.pipeIn), medianF(c.ttyOut)/medianF(p.ttyOut))
	}
	// Per round, the figure this project exists for.
	for _, p := range peers {
		if !strings.HasPrefix(p.name, "ssh -tt") {
			continue
		}
		var rs []string
		for i := range c.p50 {
			rs = append(rs, fmt.Sprintf("%.2f", ratio(c.p50[i], p.p50[i])))
		}
		var tails []string
		for i := range c.p99 {
			tails = append(tails, fmt.Sprintf("%.2f", ratio(c.p99[i], p.p99[i])))
		}
		fmt.Fprintf(out, "\ncork ÷ %s, round by round: resize p50 %s; p99 %s.\n", p.name, strings.Join(rs, ", "), strings.Join(tails, ", "))
	}
	for _, s := range skipped {
		fmt.Fprintf(out, "\nSkipped: %s\n", s)
	}
	if *loaded && !*peerResize {
		var under []*peer
		for _, p := range peers {
			if p == floor || p == corkUnix || strings.HasPrefix(p.name, "ssh -tt") {
				under = append(under, p)
			}
		}
		printLoaded(out, b, under)
	}
}

// probeFor is the probe as p's programs find it.
func probeFor(b *harness.Binaries, p *peer) string {
	if p.probe != "" {
		return p.probe
	}
	return b.Probe
}

// resizeCells are the peer's resize p50 and p99 in ms, each the median
// over the rounds, or empty for a peer that cannot resize.
func (p *peer) resizeCells() (p50, p99 string) {
	if p.noResize {
		return "", ""
	}
	return ms(median(p.p50)), ms(median(p.p99))
}

func ratio(a, b time.Duration) float64 { return float64(a) / float64(b) }

func medianF(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }
