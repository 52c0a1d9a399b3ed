//go:build linux

package main

import (
	"flag"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/corkvm/cork/host/e2e/harness"
)

var (
	loadStreams = flag.Int("load-streams", 16, "sessions streaming output while the loaded rows resize")
	shareN      = flag.Int("share-streams", 8, "sessions streaming at once in the equal-shares column")
	shareMiB    = flag.Int("share-mib", 64, "MiB each of them streams")
	loaded      = flag.Bool("loaded", true, "measure the peers under load too")
)

// loadedResults are one round of one peer under load.
type loadedResults struct {
	p50, p99 []time.Duration
	all      []time.Duration // every round's latencies
	share    []float64       // slowest stream's MiB/s ÷ fastest's
}

// streams starts n sessions of the peer, each printing zeros as fast as
// its pipes take them, read by a reader that throws them away. It returns
// once every one of them is flowing: a peer whose sessions start slowly
// (ssh's take a quarter of a second each) would otherwise be measured
// under less load, and a fast one under its own start-ups.
func (p *peer) streams(n int) (stop func()) {
	var cmds []*exec.Cmd
	var flowing sync.WaitGroup
	for range n {
		args := p.pipe("cat", "/dev/zero")
		cmd := exec.Command(args[0], args[1:]...)
		stdout, err := cmd.StdoutPipe()
		check(err)
		check(cmd.Start())
		flowing.Add(1)
		go func() {
			_, err := io.CopyN(io.Discard, stdout, 1<<20)
			flowing.Done()
			if err == nil {
				io.Copy(io.Discard, stdout)
			}
		}()
		cmds = append(cmds, cmd)
	}
	started := make(chan struct{})
	go func() { flowing.Wait(); close(started) }()
	select {
	case <-started:
	case <-time.After(time.Minute):
		check(fmt.Errorf("%s: %d streams did not all start within a minute", p.name, n))
	}
	return func() {
		for _, c := range cmds {
			c.Process.Kill()
		}
		for _, c := range cmds {
			c.Wait()
		}
	}
}

// shares runs n sessions of the peer at once, each moving mib MiB, and
// returns the slowest one's throughput over the fastest one's.
func (p *peer) shares(n, mib int) float64 {
	count := strconv.Itoa(mib << 20)
	rates := make([]float64, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { rates[i] = mibps(mib<<20, drainRun(mib<<20, p.pipe("head", "-c", count, "/dev/zero")...)) })
	}
	wg.Wait()
	return slices.Min(rates) / slices.Max(rates)
}

// printLoaded measures what sessions do to each other: a resize on an
// idle session while others stream output, and how evenly streams that
// run at once share the machine.
func printLoaded(out io.Writer, b *harness.Binaries, peers []*peer) {
	results := make(map[*peer]*loadedResults)
	for _, p := range peers {
		results[p] = &loadedResults{}
	}
	for round := range *peerRounds {
		for _, p := range peers {
			probe := probeFor(b, p)
			progress("loaded round %d: %s", round, p.name)
			stop := p.streams(*loadStreams)
			lat := p.measureResize(probe, 100)
			stop()
			r := results[p]
			r.p50, r.p99 = append(r.p50, median(lat)), append(r.p99, percentile(lat, 0.99))
			r.all = append(r.all, lat...)
			r.share = append(r.share, p.shares(*shareN, *shareMiB))
		}
	}
	fmt.Fprintf(out, "\n### Under load\n\n%d rounds, rows interleaved; medians over the rounds. Resize: 100 single resizes of an idle session on a terminal while %d other sessions of the same tool (through the same corkd, the same sshd) print zeros as fast as they are read. Shares: %d sessions each moving %d MiB at once; the slowest one's MiB/s over the fastest one's (1 is an even share).\n\n",
		*peerRounds, *loadStreams, *shareN, *shareMiB)
	fmt.Fprintln(out, "| | idle resize p50 ms | idle p99 ms | loaded resize p50 ms | loaded p99 ms | loaded p99, rounds pooled | loaded p50 ÷ idle p50 | shares, slowest ÷ fastest (lowest round) |")
	fmt.Fprintln(out, "|---|---|---|---|---|---|---|---|")
	for _, p := range peers {
		r := results[p]
		fmt.Fprintf(out, "| %s | %s | %s | %s | %s | %s | %.1f | %.2f (%.2f) |\n", p.name, ms(median(p.p50)), ms(median(p.p99)),
			ms(median(r.p50)), ms(median(r.p99)), ms(percentile(r.all, 0.99)), ratio(median(r.p50), median(p.p50)), medianF(r.share), slices.Min(r.share))
	}
	fmt.Fprintf(out, "\nA p99 of one round's 100 resizes is its second slowest, so one stall makes it; pooled, it is the p99 of all %d.\n", 100**peerRounds)
	var rows []string
	for i := range *peerRounds {
		var cells []string
		for _, p := range peers {
			cells = append(cells, fmt.Sprintf("%s %s/%s", p.name, ms(results[p].p50[i]), ms(results[p].p99[i])))
		}
		rows = append(rows, strings.Join(cells, "; "))
	}
	fmt.Fprintf(out, "\nLoaded resize p50/p99 ms, round by round:\n\n- %s\n", strings.Join(rows, "\n- "))
}
