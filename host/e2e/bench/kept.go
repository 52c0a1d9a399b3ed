//go:build linux

package main

import (
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/corkvm/cork/host/e2e/harness"
)

// printKept measures kept sessions: how long from `cork attach` to the
// program's first redraw, and how long a cut connection takes to come back
// to life (a resize made during the cut reaching the program).
func printKept(out io.Writer, b *harness.Binaries, a *agent) {
	progress("kept sessions")
	const runs = 30

	// The probe in a kept session, detached.
	t := startTerminal(24, 80, nil, b.Cork, "exec", "--connect", a.url, "-it", "--keep", "--name", "bench-attach", "--", b.Probe)
	if _, ok := t.next("start", 30*time.Second); !ok {
		check(fmt.Errorf("kept probe did not start"))
	}
	t.Master.Write([]byte{0x00, 0x11})
	select {
	case <-t.ReadDone():
	case <-time.After(10 * time.Second):
		check(fmt.Errorf("cork did not detach"))
	}
	t.Close()

	var attach []time.Duration
	for i := range runs {
		rows, cols := 30+i%10, 100+i%20
		begin := monotonic()
		t := startTerminal(uint16(rows), uint16(cols), nil, b.Cork, "attach", "--connect", a.url, "bench-attach")
		// The restored screen shows the probe's earlier reports: the
		// first one stamped after the attach began is the redraw's.
		var r report
		for ok := false; !ok || r.ns < begin; {
			if r, ok = t.next("winch", 10*time.Second); !ok {
				check(fmt.Errorf("no redraw after attach %d", i))
			}
		}
		attach = append(attach, time.Duration(r.ns-begin))
		t.settle(100*time.Millisecond, time.Second)
		t.Master.Write([]byte{0x00, 0x11})
		select {
		case <-t.ReadDone():
		case <-time.After(10 * time.Second):
		}
		t.Close()
	}
	exec.Command(b.Cork, "kill", "--signal", "KILL", "--connect", a.url, "bench-attach").Run()

	// Resume: a cut, a resize during it, the resize reaching the program
	// over the connection cork makes again.
	proxy, err := harness.NewCutProxy(filepath.Join(b.Dir, "bench-proxy.sock"), a.Sock)
	check(err)
	defer proxy.Close()
	t = startTerminal(24, 80, nil, b.Cork, "exec", "--connect", proxy.URL(), "-it", "--keep", "--name", "bench-resume", "--", b.Probe)
	defer t.quit()
	if _, ok := t.next("start", 30*time.Second); !ok {
		check(fmt.Errorf("kept probe did not start"))
	}
	var resume []time.Duration
	for i := range runs {
		proxy.Cut()
		begin := t.setSize(40+i%2, 120+i%2) // a new size each time: the kernel signals only a change
		r, ok := t.next("winch", 10*time.Second)
		if !ok {
			check(fmt.Errorf("no resize after cut %d", i))
		}
		resume = append(resume, time.Duration(r.ns-begin))
	}
	exec.Command(b.Cork, "kill", "--signal", "KILL", "--connect", a.url, "bench-resume").Run()

	fmt.Fprintf(out, "\n### Kept sessions\n\n%d runs each. Attach: from starting `cork attach` to the program's first SIGWINCH of the redraw, at a new terminal size each time (cork's start-up, the dial, the attach, the redraw). Resume: the connection cut under cork, the terminal resized at once, until the program sees the new size (cork noticing the cut, dialling again, resuming, applying the size).\n\n", runs)
	fmt.Fprintln(out, "| | median ms | p99 ms | slowest ms |")
	fmt.Fprintln(out, "|---|---|---|---|")
	fmt.Fprintf(out, "| attach to first redraw | %s | %s | %s |\n", ms(median(attach)), ms(percentile(attach, 0.99)), ms(slices.Max(attach)))
	fmt.Fprintf(out, "| resume after a cut | %s | %s | %s |\n", ms(median(resume)), ms(percentile(resume, 0.99)), ms(slices.Max(resume)))
}
