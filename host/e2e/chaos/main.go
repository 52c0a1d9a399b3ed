//go:build linux

// Command chaos attacks one corkd from a non-root admitted uid while root's
// kept session prints a counter, and checks that corkd shrugs it off.
// `make chaos` runs it.
//
// The harness builds cork and corkd from the tree, creates a user with
// useradd, starts corkd on a unix socket in a temporary directory with
// --allow-uid for that user, and starts root's kept session. Then copies
// of this program, re-executed as the user (so that SO_PEERCRED names the
// user), open thousands of idle and half-finished connections, send
// malformed copies, huge sizes, output that is slow to emulate, attach and
// watch without reading, and get killed in the middle of resumes. All the
// while root reads the counter, resuming every second, and runs cork ls
// every few hundred milliseconds.
//
// The run passes when corkd is still up, the counter never paused longer
// than -max-pause, every cork ls answered within -max-ls, every resume that
// stayed inside the buffer gave each counter line once and in order, no
// copy left a temporary file, and corkd's threads, fds, goroutines and RSS
// came back to within the stated slack of where they started. Each
// attacker is bounded in count and in time; everything started is stopped
// by its pid, and the user and the directory are removed, also on failure.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

// sizes are how hard the run attacks.
type sizes struct {
	conns, copies, huge, stallers, resumes int
	duration                               time.Duration
	attacks                                []string
}

// bounds are what the run allows corkd.
type bounds struct {
	maxPause, maxLs               time.Duration
	threadSlack, fdSlack, goSlack int
	rssSlackKiB                   int
	settle                        time.Duration
	corkdAddressSpaceMiB          int
	attackerOverstays             time.Duration // an attacker is killed this long after the attack's end
}

var allAttacks = []string{"conns", "copies", "huge", "slow", "stall", "resume"}

func main() {
	if len(os.Args) > 1 && os.Args[1] == attackCommand {
		os.Exit(attackMain(os.Args[2:]))
	}
	os.Exit(run())
}

func parseFlags() (sizes, bounds, bool) {
	var sz sizes
	var bd bounds
	var only string
	flag.IntVar(&sz.conns, "conns", 12000, "idle and half-finished connections held at once")
	flag.IntVar(&sz.copies, "copies", 2000, "malformed copies sent")
	flag.IntVar(&sz.huge, "huge", 2, "kept sessions at 65535x65535, each peeked and watched")
	flag.IntVar(&sz.stallers, "stallers", 8, "attachers and watchers that never read")
	flag.IntVar(&sz.resumes, "resumes", 300, "clients killed in the middle of a resume")
	flag.DurationVar(&sz.duration, "duration", 90*time.Second, "how long the attack lasts")
	flag.StringVar(&only, "attacks", strings.Join(allAttacks, ","), "attacks to make, comma-separated: "+strings.Join(allAttacks, ", "))
	flag.DurationVar(&bd.maxPause, "max-pause", 2*time.Second, "longest pause allowed in root's counter")
	flag.DurationVar(&bd.maxLs, "max-ls", 2*time.Second, "longest root's cork ls may take")
	flag.IntVar(&bd.threadSlack, "thread-slack", 64, "threads corkd may end with above where it started")
	flag.IntVar(&bd.fdSlack, "fd-slack", 4, "fds corkd may end with above where it started")
	flag.IntVar(&bd.goSlack, "goroutine-slack", 6, "goroutines corkd may end with above where it started")
	rssSlack := flag.Int("rss-slack-mib", 32, "MiB of RSS corkd may end with above where it started")
	flag.DurationVar(&bd.settle, "settle", 30*time.Second, "time corkd has after the attack to come back to its figures")
	flag.IntVar(&bd.corkdAddressSpaceMiB, "corkd-as-mib", 4096, "corkd's address space limit (RLIMIT_AS), so that a runaway corkd fails the run, not the machine")
	flag.Parse()
	bd.rssSlackKiB = *rssSlack << 10
	bd.attackerOverstays = 20 * time.Second
	for _, a := range strings.Split(only, ",") {
		if a = strings.TrimSpace(a); a == "" {
			continue
		}
		if !slices.Contains(allAttacks, a) {
			fmt.Fprintf(os.Stderr, "chaos: -attacks: no attack %q; the attacks are %s\n", a, strings.Join(allAttacks, ", "))
			return sz, bd, false
		}
		sz.attacks = append(sz.attacks, a)
	}
	return sz, bd, true
}

// run sets up, attacks, checks and tears down; its deferred teardown runs
// on every path, an interrupt included.
func run() int {
	sz, bd, ok := parseFlags()
	if !ok {
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "chaos: needs root: it creates a user and runs corkd admitting it (sudo make chaos)")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Output into a closed pipe (| head) must not kill the run before its
	// teardown: with SIGPIPE notified, the write fails instead.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	began := time.Now()
	w, err := newWorld(ctx, bd)
	if w != nil {
		defer w.close()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos: setting up:", err)
		return 1
	}
	r := attack(ctx, w, sz, bd)
	r.took = time.Since(began)
	r.print(os.Stdout, sz, bd)
	if ctx.Err() != nil {
		fmt.Println("FAIL: interrupted")
		return 1
	}
	if len(r.broken) > 0 {
		w.printLogTail(os.Stdout, 30)
		return 1
	}
	return 0
}
