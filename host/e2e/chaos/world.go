//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corkvm/cork/host/e2e/harness"
)

// world is what the run sets up: binaries, the user, corkd, and the
// processes started since. close takes all of it down again.
type world struct {
	dir       string // everything the run writes, removed by close
	cork      string
	corkd     string
	attacker  string // a copy of this program the user may execute
	user      string
	uid, gid  int
	home      string
	agent     *harness.Agent
	log       string
	procs     procs
	userAdded bool
}

// newWorld builds the binaries, creates the user and starts corkd. On an
// error it returns what it made so far, for the caller to close.
func newWorld(ctx context.Context, bd bounds) (*world, error) {
	dir, err := os.MkdirTemp("", "cork-chaos")
	if err != nil {
		return nil, err
	}
	w := &world{dir: dir, cork: filepath.Join(dir, "cork"), corkd: filepath.Join(dir, "corkd"), attacker: filepath.Join(dir, "chaos")}
	// The user reaches the socket, its home and this program through dir.
	if err := os.Chmod(dir, 0o755); err != nil {
		return w, err
	}
	for bin, pkg := range map[string]string{w.cork: "host/cmd/cork", w.corkd: "guest/cmd/corkd"} {
		if err := build(ctx, bin, pkg); err != nil {
			return w, err
		}
	}
	if err := copySelf(w.attacker); err != nil {
		return w, err
	}
	if err := w.addUser(); err != nil {
		return w, err
	}
	return w, w.startCorkd(bd)
}

// build compiles pkg as a release is built: static, with -trimpath.
func build(ctx context.Context, dst, pkg string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", dst, "github.com/corkvm/cork/"+pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building %s: %v\n%s", pkg, err, out)
	}
	return nil
}

// copySelf copies this program where the user can execute it: go run
// leaves it in a directory only root may enter.
func copySelf(dst string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	b, err := os.ReadFile(self)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}

func (w *world) addUser() error {
	w.user = fmt.Sprintf("corkchaos%d", os.Getpid()%100000)
	w.home = filepath.Join(w.dir, "home")
	if out, err := exec.Command("useradd", "-M", "-d", w.home, "-s", "/bin/sh", w.user).CombinedOutput(); err != nil {
		return fmt.Errorf("useradd %s: %v: %s", w.user, err, out)
	}
	w.userAdded = true
	out, err := exec.Command("id", "-u", w.user).Output()
	if err != nil {
		return fmt.Errorf("id -u %s: %v", w.user, err)
	}
	w.uid, _ = strconv.Atoi(strings.TrimSpace(string(out)))
	out, err = exec.Command("id", "-g", w.user).Output()
	if err != nil {
		return fmt.Errorf("id -g %s: %v", w.user, err)
	}
	w.gid, _ = strconv.Atoi(strings.TrimSpace(string(out)))
	if err := os.Mkdir(w.home, 0o700); err != nil {
		return err
	}
	return os.Chown(w.home, w.uid, w.gid)
}

// startCorkd starts corkd admitting the user, its log in a file, and caps
// its address space.
func (w *world) startCorkd(bd bounds) error {
	w.log = filepath.Join(w.dir, "corkd.log")
	logf, err := os.Create(w.log)
	if err != nil {
		return err
	}
	defer logf.Close() // corkd has its own copy
	w.agent, err = harness.StartAgent(w.corkd, filepath.Join(w.dir, "corkd.sock"), logf, "--allow-uid", strconv.Itoa(w.uid))
	if err != nil {
		return err
	}
	limit := uint64(bd.corkdAddressSpaceMiB) << 20
	return unix.Prlimit(w.pid(), unix.RLIMIT_AS, &unix.Rlimit{Cur: limit, Max: limit}, nil)
}

func (w *world) pid() int { return w.agent.Cmd.Process.Pid }

// corkdDied says how corkd ended, or "" while it runs.
func (w *world) corkdDied() string {
	select {
	case <-w.agent.Exited():
		return w.agent.Cmd.ProcessState.String()
	default:
		return ""
	}
}

// close stops what the run started, by pid, then removes the user and the
// directory. It runs on every path out of run.
func (w *world) close() {
	w.procs.killAll()
	if w.agent != nil {
		w.agent.Stop()
	}
	if w.userAdded {
		killUserProcesses(w.uid)
		if out, err := exec.Command("userdel", w.user).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "chaos: userdel %s: %v: %s\n", w.user, err, out)
		}
	}
	os.RemoveAll(w.dir)
}

// killUserProcesses kills, by pid, what still runs as uid: the programs
// of the user's sessions, which die with corkd's PTYs but may linger.
func killUserProcesses(uid int) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		pids := processesOf(uid)
		if len(pids) == 0 || time.Now().After(deadline) {
			return
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// processesOf lists the processes whose real uid is uid.
func processesOf(uid int) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/status")
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "Uid:"); ok {
				if f := strings.Fields(v); len(f) > 0 && f[0] == strconv.Itoa(uid) {
					pids = append(pids, pid)
				}
				break
			}
		}
	}
	return pids
}

// printLogTail prints corkd's last n log lines, or the first n of its
// crash: why a bound broke.
func (w *world) printLogTail(out io.Writer, n int) {
	b, err := os.ReadFile(w.log)
	if err != nil {
		return
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	what := "last"
	if i := slices.IndexFunc(lines, diedLine); i >= 0 {
		// A crash's goroutine dump ends the log: its first lines say why.
		lines, what = lines[i:], "first crash"
	}
	switch {
	case len(lines) <= n:
	case what == "last":
		lines = lines[len(lines)-n:]
	default:
		lines = lines[:n]
	}
	fmt.Fprintf(out, "\ncorkd's log, %s %d lines:\n", what, len(lines))
	for _, l := range lines {
		if len(l) > 300 {
			l = append(l[:300:300], "..."...)
		}
		fmt.Fprintf(out, "  %s\n", l)
	}
}

// crashLine is the runtime's first words in corkd's log when it died,
// with a colon before them, or "".
func (w *world) crashLine() string {
	b, _ := os.ReadFile(w.log)
	for _, l := range bytes.Split(b, []byte("\n")) {
		if diedLine(l) {
			return ": " + string(l)
		}
	}
	return ""
}

// diedLine reports whether l begins what the Go runtime prints when a
// program dies.
func diedLine(l []byte) bool {
	return bytes.HasPrefix(l, []byte("fatal error:")) || bytes.HasPrefix(l, []byte("panic:")) || bytes.HasPrefix(l, []byte("runtime: "))
}

// procs are the processes the run started, so that each is stopped by
// its pid whatever happens.
type procs struct {
	mu sync.Mutex
	m  map[int]*exec.Cmd
}

// start starts cmd and remembers it until forget.
func (p *procs) start(cmd *exec.Cmd) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	if p.m == nil {
		p.m = map[int]*exec.Cmd{}
	}
	p.m[cmd.Process.Pid] = cmd
	return nil
}

func (p *procs) forget(cmd *exec.Cmd) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.m, cmd.Process.Pid)
}

// killAll kills every process still remembered; their Wait is their
// starters' to call.
func (p *procs) killAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for pid := range p.m {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}
