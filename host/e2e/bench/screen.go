//go:build linux

package main

import (
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/corkvm/cork/guest/procfs"
	"github.com/corkvm/cork/host/e2e/harness"
	"github.com/corkvm/cork/host/e2e/termtest"
)

// printScreen measures what keeping a session's screen costs: output
// throughput of a kept session, with and without watchers, beside a plain
// one; how long an attach takes to put a full 200x50 screen back; and the
// memory a kept session takes.
func printScreen(out io.Writer, b *harness.Binaries, a *agent) {
	progress("screen")
	const mib = 32
	const rounds = 5
	text := fmt.Sprintf(`read go; yes 'a line of build output, as a compiler or a test runner prints it' | head -c %d`, mib<<20)

	// One run: the session starts, waits for a line, prints; watchers
	// attach before the line is typed.
	run := func(keep bool, watchers int) time.Duration {
		name := fmt.Sprintf("bench-%d", time.Now().UnixNano())
		args := []string{b.Cork, "exec", "--connect", a.url, "-it"}
		if keep {
			args = append(args, "--keep", "--name", name)
		}
		drained := make(chan struct{})
		tm, err := termtest.Open(termtest.Options{Rows: 24, Cols: 80}, args[0], append(args[1:], "--", "sh", "-c", text)...)
		check(err)
		defer tm.Close()
		go func() { <-tm.ReadDone(); close(drained) }()
		for range watchers {
			waitFor(func() bool { return strings.Contains(runOut(b.Cork, "ls", "--connect", a.url), name) })
			w, err := termtest.Open(termtest.Options{Rows: 24, Cols: 80}, b.Cork, "attach", "--read-only", "--connect", a.url, name)
			check(err)
			defer w.Close()
		}
		if watchers > 0 {
			waitFor(func() bool {
				return strings.Contains(runOut(b.Cork, "ls", "--connect", a.url), fmt.Sprintf("%d watching", watchers))
			})
		}
		// Output and the Out buffer of the terminals would grow: the
		// harness reads the output only to the end.
		start := time.Now()
		tm.Master.Write([]byte("go\r"))
		<-drained
		return time.Since(start)
	}
	type row struct {
		name string
		f    func() time.Duration
		runs []time.Duration
	}
	rows := []*row{
		{name: "plain session (cork exec -t)", f: func() time.Duration { return run(false, 0) }},
		{name: "kept session (--keep)", f: func() time.Duration { return run(true, 0) }},
		{name: "kept session, 2 watchers", f: func() time.Duration { return run(true, 2) }},
	}
	for range rounds {
		for _, r := range rows {
			r.runs = append(r.runs, r.f())
		}
	}
	fmt.Fprintf(out, "\n### Screen keeping\n\n%d MiB of scrolling text (`yes` lines) to an 80x24 terminal, %d rounds, the rows interleaved. The screen is kept off the output path: the watchers' views are redrawn from it 25 times a second.\n\n", mib, rounds)
	fmt.Fprintln(out, "| | MiB/s (median) | slowest run MiB/s | ÷ plain |")
	fmt.Fprintln(out, "|---|---|---|---|")
	plain := mibps(mib<<20, median(rows[0].runs))
	for _, r := range rows {
		m := mibps(mib<<20, median(r.runs))
		fmt.Fprintf(out, "| %s | %.1f | %.1f | %.2f |\n", r.name, m, mibps(mib<<20, slices.Max(r.runs)), m/plain)
	}

	// Attach to a full 200x50 screen: from starting cork attach to the
	// screen's last line on the terminal.
	fill := `i=1; while [ $i -le 50 ]; do printf '\033[%d;1H\033[3%dmrow %03d %s' $i $((i%7+1)) $i "$(printf '%0180d' 0)"; i=$((i+1)); done; printf '\033[0m'; read x`
	name := "bench-screen"
	tm, err := termtest.Open(termtest.Options{Rows: 50, Cols: 200}, b.Cork, "exec", "--connect", a.url, "-it", "--keep", "--name", name, "--", "sh", "-c", fill)
	check(err)
	waitFor(func() bool { return strings.Contains(tm.Out.String(), "row 050") })
	tm.Master.Write([]byte{0x00, 0x11})
	<-tm.ReadDone()
	tm.Close()
	var attach []time.Duration
	for range 20 {
		start := time.Now()
		w, err := termtest.Open(termtest.Options{Rows: 50, Cols: 200}, b.Cork, "attach", "--connect", a.url, name)
		check(err)
		waitFor(func() bool { return strings.Contains(w.Out.String(), "row 050") })
		attach = append(attach, time.Since(start))
		w.Master.Write([]byte{0x00, 0x11})
		<-w.ReadDone()
		w.Close()
	}
	runOut(b.Cork, "kill", "--signal", "KILL", "--connect", a.url, name)

	// Memory: a fresh corkd, idle, then with ten kept sessions each
	// showing a full 200x50 screen over 100 lines of scrollback.
	fresh := startAgent(b.Corkd, filepath.Join(b.Dir, "mem"))
	defer fresh.stop()
	idle := rssKiB(fresh.Cmd.Process.Pid)
	full := `seq 1 200; ` + fill
	for i := range 10 {
		tm, err := termtest.Open(termtest.Options{Rows: 50, Cols: 200}, b.Cork, "exec", "--connect", fresh.url, "-it", "--keep", "--name", fmt.Sprint("mem", i), "--", "sh", "-c", full)
		check(err)
		waitFor(func() bool { return strings.Contains(tm.Out.String(), "row 050") })
		tm.Master.Write([]byte{0x00, 0x11})
		<-tm.ReadDone()
		tm.Close()
		runOut(b.Cork, "peek", "--connect", fresh.url, fmt.Sprint("mem", i)) // the screen caught up
	}
	ten := rssKiB(fresh.Cmd.Process.Pid)
	hwm, _ := procfs.StatusKiB(fresh.Cmd.Process.Pid, "VmHWM")

	fmt.Fprintf(out, "\n| | |\n|---|---|\n")
	fmt.Fprintf(out, "| attach to a full 200x50 screen, to its last line drawn (median of 20, slowest) | %s ms, %s ms |\n", ms(median(attach)), ms(slices.Max(attach)))
	fmt.Fprintf(out, "| corkd RSS, idle, no kept session | %.1f MiB |\n", float64(idle)/1024)
	fmt.Fprintf(out, "| corkd RSS, 10 kept 200x50 sessions with full screens and 100 lines of scrollback | %.1f MiB (peak %.1f) |\n", float64(ten)/1024, float64(hwm)/1024)
	fmt.Fprintf(out, "| per kept session | %.2f MiB |\n", float64(ten-idle)/1024/10)
}

func runOut(args ...string) string {
	o, _ := exec.Command(args[0], args[1:]...).CombinedOutput()
	return string(o)
}

// waitFor polls cond for up to 30 s.
func waitFor(cond func() bool) {
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			check(fmt.Errorf("a bench condition did not hold within 30 s"))
		}
		time.Sleep(5 * time.Millisecond)
	}
}
