//go:build linux

// Command bench measures cork on this machine, side by side with the floor
// (no cork) and with the fork-per-resize workaround cork replaces, and
// prints the results as Markdown. `make bench` runs it.
//
// Resize latency is the probe's CLOCK_MONOTONIC at SIGWINCH minus the
// harness's CLOCK_MONOTONIC just before it set the size on its terminal's
// master; both clocks are the machine's one clock.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/corkvm/cork/guest/procfs"
	"github.com/corkvm/cork/host/e2e/harness"
	"github.com/corkvm/cork/host/e2e/termtest"
	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

var (
	singles = flag.Int("resizes", 500, "single resizes per row")
	bursts  = flag.Int("bursts", 50, "drag bursts per row")
	burstN  = flag.Int("burst-size", 200, "sizes per burst")
	gap     = flag.Duration("burst-gap", 2*time.Millisecond, "time between the sizes of a burst")
	tputMiB = flag.Int("mib", 128, "MiB per throughput run")
	verbose = flag.Bool("v", false, "progress on stderr")
	// agentProcs runs the agent with another GOMAXPROCS, to compare
	// schedulings side by side.
	agentProcs = flag.String("agent-gomaxprocs", "", "GOMAXPROCS for the agent (default: Go's)")
	only       = flag.String("only", "", "run only these sections, comma-separated: resize, throughput, startup, footprint, peers, forward, kept, screen, copy, bake")
)

// section reports whether -only lets a section run.
func section(name string) bool {
	return *only == "" || slices.Contains(strings.Split(*only, ","), name)
}

func main() {
	flag.Parse()
	dir, err := os.MkdirTemp("", "cork-bench")
	check(err)
	defer os.RemoveAll(dir)
	b, err := harness.Build(dir)
	check(err)

	agent := startAgent(b.Corkd, dir)
	defer agent.stop()

	started := time.Now()
	var out bytes.Buffer
	fmt.Fprintf(&out, "Measured %s on %d cores (%s), Go %s; `make bench`.\n\n",
		time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), kernelRelease(), strings.TrimPrefix(runtime.Version(), "go"))

	// corkd under the stand-in logs to a file of its own and leaves its
	// pid, through a wrapper given as the agent, to count the sizes it
	// applies.
	machineLog := filepath.Join(dir, "corkd-machine.log")
	machinePID := filepath.Join(dir, "corkd-machine.pid")
	wrapper := filepath.Join(dir, "corkd-counted")
	check(os.WriteFile(wrapper, []byte(fmt.Sprintf("#!/bin/sh\necho $$ >%s\nexec %s \"$@\" 2>>%s\n", machinePID, b.Corkd, machineLog)), 0o755))
	standinLog := filepath.Join(dir, "standin.log")
	rows := []resizeRow{
		{name: "floor: probe on the terminal itself", args: []string{b.Probe},
			applied: nil},
		{name: "cork, unix socket", args: []string{b.Cork, "exec", "-it", "--connect", agent.url, "--", b.Probe},
			applied: func() int { return resizesApplied(agent.Cmd.Process.Pid, agent.log) }},
		{name: "cork --machine (smolvm stand-in)", args: []string{b.Cork, "exec", "-it", "--machine", "m", "--smolvm", b.Standin, "--agent", wrapper, "--", b.Probe},
			applied: func() int { return resizesApplied(readPID(machinePID), machineLog) }},
		{name: "fork-per-resize workaround", args: []string{b.Forkresize, "--smolvm", b.Standin, "--name", "m", "--", b.Probe},
			applied: func() int { return countLines(standinLog, "stty -F") }},
	}
	for i := range rows {
		rows[i].env = []string{"CORK_STANDIN_LOG=" + standinLog}
	}
	if section("resize") {
		for i := range rows {
			rows[i].measure(b)
		}
		printResize(&out, rows)
	}
	if section("throughput") {
		printThroughput(&out, b, agent)
	}
	if section("startup") {
		printStartup(&out, b, agent)
	}
	if section("footprint") {
		printFootprint(&out, b)
	}
	if section("peers") {
		printPeers(&out, b, agent)
	}
	if section("forward") {
		printForward(&out, b, agent)
	}
	if section("kept") {
		printKept(&out, b, agent)
	}
	if section("screen") {
		printScreen(&out, b, agent)
	}
	if section("copy") {
		printCopy(&out, b.Cork, agent.url, filepath.Join(b.Dir, "copy"))
	}
	if section("bake") {
		printBake(&out, b)
	}
	fmt.Fprintf(&out, "\nThe run took %v.\n", time.Since(started).Round(time.Second))
	os.Stdout.Write(out.Bytes())
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		for i := len(onFailure) - 1; i >= 0; i-- {
			onFailure[i]()
		}
		os.Exit(1)
	}
}

// onFailure stops what the bench started before check ends it: a corkd
// left behind by a failed run would serve on until someone kills it.
var onFailure []func()

func progress(format string, a ...any) {
	if *verbose {
		fmt.Fprintf(os.Stderr, format+"\n", a...)
	}
}

// agent is corkd as users run it, at its default log level (a debug line
// per resize would be written while the resized program waits for the
// CPU), with its log in a file.
type agent struct {
	*harness.Agent
	url string
	log string
}

func startAgent(corkd, dir string) *agent {
	if *agentProcs != "" {
		os.Setenv("GOMAXPROCS", *agentProcs)
		defer os.Unsetenv("GOMAXPROCS")
	}
	check(os.MkdirAll(dir, 0o755))
	a := &agent{log: filepath.Join(dir, "corkd.log")}
	logf, err := os.Create(a.log)
	check(err)
	a.Agent, err = harness.StartAgent(corkd, filepath.Join(dir, "corkd.sock"), logf)
	check(err)
	onFailure = append(onFailure, a.stop)
	a.url = a.URL
	return a
}

func (a *agent) stop() { a.Stop() }

// statsResizes matches a whole stats line of corkd's log, newline
// included, and captures its resizes count: the log may be read while
// corkd writes a line, and one without its newline may be cut short.
var statsResizes = regexp.MustCompile(`msg=stats .* resizes=(\d+)\n`)

// resizesApplied asks the corkd with pid for its figures (SIGUSR1) and
// returns the window sizes it has applied so far, from the line it logs.
func resizesApplied(pid int, log string) int {
	lines := func() [][][]byte {
		b, err := os.ReadFile(log)
		check(err)
		return statsResizes.FindAllSubmatch(b, -1)
	}
	before := len(lines())
	check(syscall.Kill(pid, syscall.SIGUSR1))
	deadline := time.Now().Add(10 * time.Second)
	for {
		if all := lines(); len(all) > before {
			n, err := strconv.Atoi(string(all[len(all)-1][1]))
			check(err)
			return n
		}
		if time.Now().After(deadline) {
			check(fmt.Errorf("corkd %d logged no stats in %s", pid, log))
		}
		time.Sleep(time.Millisecond)
	}
}

func readPID(file string) int {
	b, err := os.ReadFile(file)
	check(err)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	check(err)
	return pid
}

// countLines counts the lines of file that hold s.
func countLines(file, s string) int {
	b, _ := os.ReadFile(file)
	return bytes.Count(b, []byte(s))
}

// forksSoFar is the machine's count of processes created since boot.
func forksSoFar() int {
	b, err := os.ReadFile("/proc/stat")
	check(err)
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "processes" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

func monotonic() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

func kernelRelease() string {
	var u unix.Utsname
	unix.Uname(&u)
	return "Linux " + unix.ByteSliceToString(u.Release[:])
}

// report is one line of the probe's.
type report struct {
	kind       string
	rows, cols int
	ns         int64
}

// reportLine is a probe's report: kind, rows, cols, CLOCK_MONOTONIC ns.
var reportLine = regexp.MustCompile(`(start|winch|size) (\d+) (\d+) (\d+)\s*$`)

// terminal runs a command on a PTY the harness owns and parses the probe's
// reports from its screen as they come.
type terminal struct {
	*termtest.Terminal
	reports chan report
}

func startTerminal(rows, cols uint16, env []string, args ...string) *terminal {
	t := &terminal{reports: make(chan report, 1<<16)}
	tm, err := termtest.Open(termtest.Options{Rows: rows, Cols: cols, Env: env, OnLine: func(l string) {
		// A report may follow a screen's escape sequences on its line:
		// after an attach, the restored screen ends where the probe's
		// next line begins.
		f := reportLine.FindStringSubmatch(l)
		if f == nil {
			return
		}
		r := report{kind: f[1]}
		r.rows, _ = strconv.Atoi(f[2])
		r.cols, _ = strconv.Atoi(f[3])
		r.ns, _ = strconv.ParseInt(f[4], 10, 64)
		t.reports <- r
	}}, args[0], args[1:]...)
	check(err)
	t.Terminal = tm
	go func() { <-tm.ReadDone(); close(t.reports) }()
	return t
}

// setSize sets the terminal's size and returns the clock just before.
func (t *terminal) setSize(rows, cols int) int64 {
	now := monotonic()
	check(pty.Setsize(t.Master, &pty.Winsize{Rows: uint16(rows), Cols: uint16(cols)}))
	return now
}

// next waits for the next report of kind within d.
func (t *terminal) next(kind string, d time.Duration) (report, bool) {
	timeout := time.After(d)
	for {
		select {
		case r, ok := <-t.reports:
			if !ok {
				return report{}, false
			}
			if r.kind == kind {
				return r, true
			}
		case <-timeout:
			return report{}, false
		}
	}
}

// settle reads reports until none has come for quiet, or max has passed:
// the workaround's forks may still be applying sizes after the burst.
func (t *terminal) settle(quiet, max time.Duration) {
	end := time.After(max)
	for {
		select {
		case _, ok := <-t.reports:
			if !ok {
				return
			}
		case <-time.After(quiet):
			return
		case <-end:
			return
		}
	}
}

func (t *terminal) ask() (report, bool) {
	t.Master.Write([]byte("?\n"))
	return t.next("size", 5*time.Second)
}

// quit asks the probe to exit, and ends the terminal.
func (t *terminal) quit() {
	t.Master.Write([]byte("q\n"))
	select {
	case <-t.ReadDone():
	case <-time.After(5 * time.Second):
	}
	t.Close()
}

type resizeRow struct {
	name    string
	args    []string
	env     []string
	applied func() int // TIOCSWINSZ made for the session so far; nil: the harness's own

	start       string
	latencies   []time.Duration
	lost        int // single resizes never seen
	burstsOK    int
	perBurst    []int // TIOCSWINSZ per burst
	procsPerRsz float64
	burstTime   time.Duration
}

func (r *resizeRow) measure(b *harness.Binaries) {
	progress("resize: %s", r.name)
	t := startTerminal(24, 80, r.env, r.args...)
	defer t.quit()
	st, ok := t.next("start", 30*time.Second)
	if !ok {
		check(fmt.Errorf("%s: the probe did not start", r.name))
	}
	r.start = fmt.Sprintf("%dx%d", st.cols, st.rows)

	// Single resizes, each awaited before the next.
	forks0, resizes := forksSoFar(), 0
	for i := 0; i < *singles; i++ {
		rows, cols := 20+i%40, 60+(i*7)%120
		if i%40 == 0 && i > 0 {
			cols++ // never the size it already has
		}
		at := t.setSize(rows, cols)
		resizes++
		for {
			rep, ok := t.next("winch", 5*time.Second)
			if !ok {
				r.lost++
				break
			}
			if rep.rows == rows && rep.cols == cols {
				r.latencies = append(r.latencies, time.Duration(rep.ns-at))
				break
			}
		}
	}

	// Drags: bursts of sizes set gap apart, ending at a known size.
	rng := rand.New(rand.NewPCG(7, 8))
	for i := 0; i < *bursts; i++ {
		applied0 := r.appliedSoFar()
		began := time.Now()
		for j := 0; j < *burstN; j++ {
			t.setSize(10+rng.IntN(60), 30+rng.IntN(170))
			resizes++
			time.Sleep(*gap)
		}
		final := [2]int{71 + i%2, 201}
		t.setSize(final[0], final[1])
		resizes++
		t.settle(300*time.Millisecond, 10*time.Second)
		r.burstTime += time.Since(began)
		if rep, ok := t.ask(); ok && rep.rows == final[0] && rep.cols == final[1] {
			r.burstsOK++
		}
		r.perBurst = append(r.perBurst, r.appliedSoFar()-applied0)
	}
	r.procsPerRsz = float64(forksSoFar()-forks0) / float64(resizes)
}

// appliedSoFar counts the TIOCSWINSZ made for this row's session so far;
// without a count of the row's own, the harness's: one per size it sets.
func (r *resizeRow) appliedSoFar() int {
	if r.applied == nil {
		return 0
	}
	return r.applied()
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	// The nearest rank: the smallest sample with at least p of them at
	// or below it (the 99th of 100 for p99, not the slowest).
	s := slices.Clone(d)
	slices.Sort(s)
	rank := int(math.Ceil(p * float64(len(s))))
	return s[min(len(s), max(rank, 1))-1]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/float64(time.Millisecond)) }

func printResize(out io.Writer, rows []resizeRow) {
	fmt.Fprintf(out, "### Resize\n\nSingle resizes: %d per row, each awaited. Drag: %d bursts of %d sizes set %v apart, then a final size.\n\n",
		*singles, *bursts, *burstN, *gap)
	fmt.Fprintln(out, "| | p50 ms | p99 ms | max ms | first size seen | bursts ending at the final size | TIOCSWINSZ per burst (median) | tasks started per resize |")
	fmt.Fprintln(out, "|---|---|---|---|---|---|---|---|")
	for _, r := range rows {
		applied := strconv.Itoa(*burstN + 1) // the harness's own, on the floor
		if r.applied != nil {
			s := slices.Clone(r.perBurst)
			slices.Sort(s)
			applied = strconv.Itoa(s[len(s)/2])
		}
		lost := ""
		if r.lost > 0 {
			lost = fmt.Sprintf(" (%d never seen)", r.lost)
		}
		fmt.Fprintf(out, "| %s | %s | %s | %s%s | %s | %d of %d | %s | %.2f |\n", r.name,
			ms(percentile(r.latencies, 0.5)), ms(percentile(r.latencies, 0.99)), ms(percentile(r.latencies, 1)), lost,
			r.start, r.burstsOK, *bursts, applied, r.procsPerRsz)
	}
	floor, unix := percentile(rows[0].latencies, 0.5), percentile(rows[1].latencies, 0.5)
	fork := percentile(rows[3].latencies, 0.5)
	fmt.Fprintf(out, "\nMedian latency over the floor: cork unix +%s ms, cork --machine +%s ms. Fork-per-resize median / cork unix median: %.0fx.\n",
		ms(unix-floor), ms(percentile(rows[2].latencies, 0.5)-floor), float64(fork)/float64(unix))
	fmt.Fprintf(out, "Tasks started: the kernel's count of processes and threads created (/proc/stat), machine-wide, over the row's run, per resize; the floor row shows the background.\n")
}

// timed runs a command and returns its wall time.
func timed(cmd *exec.Cmd) time.Duration {
	start := time.Now()
	if err := cmd.Run(); err != nil {
		check(fmt.Errorf("%v: %v", cmd.Args, err))
	}
	return time.Since(start)
}

func median(d []time.Duration) time.Duration { return percentile(d, 0.5) }

func mibps(n int, d time.Duration) float64 { return float64(n) / (1 << 20) / d.Seconds() }

func printThroughput(out io.Writer, b *harness.Binaries, a *agent) {
	progress("throughput")
	n := *tputMiB << 20
	count := strconv.Itoa(n)
	const runs = 5
	// Floor and cork runs alternate, so that both see the same machine:
	// a noisy neighbour moves the floor by a factor of two between runs.
	measure := func(floor, cork func() time.Duration) (float64, float64) {
		var f, c []time.Duration
		for i := 0; i < runs; i++ {
			f = append(f, floor())
			c = append(c, cork())
		}
		return mibps(n, median(f)), mibps(n, median(c))
	}
	drain := func(args ...string) func() time.Duration { return func() time.Duration { return drainRun(n, args...) } }
	feed := func(args ...string) func() time.Duration { return func() time.Duration { return feedRun(n, args...) } }
	onPTY := func(args ...string) func() time.Duration { return func() time.Duration { return ptyRun(n, args...) } }
	corkArgs := func(args ...string) []string {
		return append([]string{b.Cork, "exec", "--connect", a.url}, args...)
	}
	type row struct {
		name        string
		floor, cork float64
	}
	var rows []row
	add := func(name string, floor, cork func() time.Duration) {
		f, c := measure(floor, cork)
		rows = append(rows, row{name, f, c})
	}
	add("pipe stdout", drain("head", "-c", count, "/dev/zero"), drain(corkArgs("--", "head", "-c", count, "/dev/zero")...))
	add("pipe stdin", feed("sh", "-c", "cat >/dev/null"), feed(corkArgs("-i", "--", "sh", "-c", "cat >/dev/null")...))
	add("tty output", onPTY("head", "-c", count, "/dev/zero"), onPTY(corkArgs("-t", "--", "head", "-c", count, "/dev/zero")...))
	fmt.Fprintf(out, "\n### Throughput\n\n%d MiB per run, median of %d runs, floor and cork runs alternating. Floor: the same bytes through a plain pipe, or through one bare local PTY.\n\n", *tputMiB, runs)
	fmt.Fprintln(out, "| stream | floor MiB/s | cork (unix socket) MiB/s | cork / floor |")
	fmt.Fprintln(out, "|---|---|---|---|")
	for _, r := range rows {
		fmt.Fprintf(out, "| %s | %.0f | %.0f | %.0f%% |\n", r.name, r.floor, r.cork, 100*r.cork/r.floor)
	}
}

// drainRun runs args and reads its stdout to the end: n bytes.
func drainRun(n int, args ...string) time.Duration {
	cmd := exec.Command(args[0], args[1:]...)
	stdout, _ := cmd.StdoutPipe()
	start := time.Now()
	check(cmd.Start())
	got, _ := io.Copy(io.Discard, stdout)
	check(cmd.Wait())
	if got != int64(n) {
		check(fmt.Errorf("%v: %d bytes, want %d", args, got, n))
	}
	return time.Since(start)
}

// feedRun runs args with n bytes on its stdin.
func feedRun(n int, args ...string) time.Duration {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin = io.LimitReader(zeros{}, int64(n))
	return timed(cmd)
}

// ptyRun runs args on a PTY and reads the PTY to the end: at least n bytes.
func ptyRun(n int, args ...string) time.Duration {
	master, slave, err := pty.Open()
	check(err)
	defer master.Close()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	start := time.Now()
	check(cmd.Start())
	slave.Close()
	got, _ := io.Copy(io.Discard, master) // until EIO
	cmd.Wait()
	if got < int64(n) {
		check(fmt.Errorf("%v on a PTY: %d bytes, want %d", args, got, n))
	}
	return time.Since(start)
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func printStartup(out io.Writer, b *harness.Binaries, a *agent) {
	progress("start-up")
	const runs = 50
	var direct, viaCork []time.Duration
	truePath, err := exec.LookPath("true")
	check(err)
	for i := 0; i < runs; i++ {
		direct = append(direct, timed(exec.Command(truePath)))
		viaCork = append(viaCork, timed(exec.Command(b.Cork, "exec", "--connect", a.url, "--", "true")))
	}
	fmt.Fprintf(out, "\n### Start-up\n\n%d runs each, interleaved.\n\n", runs)
	fmt.Fprintln(out, "| | median ms | p90 ms |")
	fmt.Fprintln(out, "|---|---|---|")
	fmt.Fprintf(out, "| `true` | %s | %s |\n", ms(median(direct)), ms(percentile(direct, 0.9)))
	fmt.Fprintf(out, "| `cork exec --connect unix://... -- true` | %s | %s |\n", ms(median(viaCork)), ms(percentile(viaCork, 0.9)))
	printStartupSteps(out, b, a.url, runs)
}

func rssKiB(pid int) int {
	n, _ := procfs.StatusKiB(pid, "VmRSS")
	return n
}

func printFootprint(out io.Writer, b *harness.Binaries) {
	progress("footprint")
	st, err := os.Stat(b.Corkd)
	check(err)
	// A fresh agent, so that idle means idle.
	a := startAgent(b.Corkd, filepath.Join(b.Dir, "fp"))
	defer a.stop()
	idle := rssKiB(a.Cmd.Process.Pid)

	var sessions []*exec.Cmd
	for i := 0; i < 16; i++ {
		c := exec.Command(b.Cork, "exec", "--connect", a.url, "--", "sleep", "60")
		check(c.Start())
		sessions = append(sessions, c)
	}
	for i := 0; countLines(a.log, "msg=started") < 16; i++ {
		if i > 1000 {
			check(fmt.Errorf("16 sessions did not start"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	busy := rssKiB(a.Cmd.Process.Pid)
	corkRSS := rssKiB(sessions[0].Process.Pid)
	for _, c := range sessions {
		c.Process.Kill()
		c.Wait()
	}
	fmt.Fprintf(out, "\n### Footprint\n\n")
	fmt.Fprintln(out, "| | |")
	fmt.Fprintln(out, "|---|---|")
	fmt.Fprintf(out, "| corkd binary (static, linux/%s, -s -w) | %.2f MiB |\n", runtime.GOARCH, float64(st.Size())/(1<<20))
	fmt.Fprintf(out, "| corkd RSS, idle | %.1f MiB |\n", float64(idle)/1024)
	fmt.Fprintf(out, "| corkd RSS, 16 open sessions | %.1f MiB |\n", float64(busy)/1024)
	fmt.Fprintf(out, "| cork RSS during a session | %.1f MiB |\n", float64(corkRSS)/1024)
}
