//go:build linux

package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/corkvm/cork/guest/procfs"
	"github.com/corkvm/cork/protocol"
)

// result is what the run saw; report.go prints it and names the bounds
// it broke.
type result struct {
	user       string
	uid, pid   int
	corkdDied  string
	start, end figures
	peak       figures
	hwmKiB     int
	statsErr   error
	settled    time.Duration // from the attack's end to the end figures

	counter *counter
	pause   time.Duration // the counter's longest, up to the end or corkd's death
	diedAt  time.Time     // when the run saw corkd die; zero while it runs
	ls      *lsPoller

	attackers    []summary
	attackerErrs []string
	sessionsEnd  string // how ending the user's sessions went
	tempFiles    int
	took         time.Duration
	broken       []string
}

// attack runs the monitors, the attackers and the checks.
func attack(ctx context.Context, w *world, sz sizes, bd bounds) *result {
	r := &result{user: w.user, uid: w.uid, pid: w.pid(), ls: &lsPoller{}}
	began := time.Now()
	c, p, err := startCounter(w.agent.Sock, time.Second)
	if err != nil {
		r.broken = append(r.broken, "root's counter session did not start: "+err.Error())
		return r
	}
	r.counter = c
	mctx, stopMonitors := context.WithCancel(ctx)
	var monitors sync.WaitGroup
	smp := &sampler{}
	monitors.Add(3)
	go func() { defer monitors.Done(); c.run(mctx, p) }()
	sleep(ctx, 2*time.Second) // the counter resumes once before the start figures
	r.start, r.statsErr = smp.sample(w)
	go func() { defer monitors.Done(); smp.run(mctx, w) }()
	go func() { defer monitors.Done(); r.ls.run(mctx, w, began) }()

	r.runAttackers(ctx, w, sz, bd)
	if r.corkdDied = w.corkdDied(); r.corkdDied == "" && ctx.Err() == nil {
		r.sessionsEnd = endUserSessions(w.agent.Sock, c.id)
		r.settle(ctx, w, smp, bd)
	}
	r.pause = c.pause(r.diedAt)
	stopMonitors()
	monitors.Wait()
	if r.corkdDied == "" {
		r.corkdDied = w.corkdDied()
	}
	if r.corkdDied != "" {
		r.corkdDied += w.crashLine()
	}
	r.peak = smp.peak.max(r.start).max(r.end)
	if r.statsErr == nil {
		r.statsErr = smp.err
	}
	r.hwmKiB, _ = procfs.StatusKiB(r.pid, "VmHWM")
	r.tempFiles = tempFilesUnder(w.home)
	r.check(sz, bd)
	return r
}

// runAttackers starts every attacker as the user and waits for them all;
// corkd's death ends them at once.
func (r *result) runAttackers(ctx context.Context, w *world, sz sizes, bd bounds) {
	actx, cancel := context.WithCancel(ctx)
	watched := make(chan struct{})
	defer func() { cancel(); <-watched }()
	go func() {
		defer close(watched)
		select {
		case <-w.agent.Exited():
			r.diedAt = time.Now()
			cancel()
		case <-actx.Done():
		}
	}()
	var mu sync.Mutex
	var wg sync.WaitGroup
	until := time.Now().Add(sz.duration)
	for _, a := range attackerArgs(w, sz, time.Now(), until) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := w.runAttacker(actx, a, bd.attackerOverstays)
			mu.Lock()
			defer mu.Unlock()
			r.attackers = append(r.attackers, s)
			if err != nil {
				r.attackerErrs = append(r.attackerErrs, err.Error())
			}
		}()
	}
	wg.Wait()
	// The monitors watch for the whole attack, after a quick attacker
	// too; with no attacker at all this is a control run.
	sleep(actx, time.Until(until))
}

// connsPerAttacker keeps each attacker's fds under the usual limit.
const connsPerAttacker = 3000

// attackerArgs lists the attacker processes the sizes ask for. The
// connections attack starts a third of the way in: a corkd that bounds
// the connections pending per uid refuses the user's other attacks while
// it runs, so they get the first third to themselves, and the sessions
// they made face the flood.
func attackerArgs(w *world, sz sizes, from, until time.Time) []attackArgs {
	base := attackArgs{sock: w.agent.Sock, home: w.home, from: from, until: until, name: "atk"}
	var all []attackArgs
	for i, kind := range sz.attacks {
		a := base
		a.kind, a.seed = kind, uint64(i+1)
		switch kind {
		case "conns":
			a.from = from.Add(until.Sub(from) / 3)
			for left := sz.conns; left > 0; left -= connsPerAttacker {
				a.n = min(left, connsPerAttacker)
				a.seed++
				all = append(all, a)
			}
			continue
		case "copies":
			a.n = sz.copies
		case "huge":
			a.n = sz.huge
		case "slow":
			a.n = 20 // rounds of peek, redraw and watch per output
		case "stall":
			a.n = sz.stallers
		case "resume":
			a.n = sz.resumes
		}
		all = append(all, a)
	}
	return all
}

// endUserSessions kills the user's kept sessions (all but root's counter)
// as root, waits for them to exit and removes them, so that the end
// figures compare like with like.
func endUserSessions(sock, keep string) string {
	deadline := time.Now().Add(20 * time.Second)
	killed := map[string]bool{}
	for time.Now().Before(deadline) {
		var ss protocol.Sessions
		if err := request(sock, protocol.TypeList, nil, protocol.TypeSessions, &ss, opTimeout); err != nil {
			return "listing them failed: " + err.Error()
		}
		left := 0
		for _, s := range ss.Sessions {
			switch {
			case s.ID == keep:
			case s.State == protocol.StateExited:
				request(sock, protocol.TypeRemove, &protocol.Remove{Session: s.ID}, protocol.TypeDone, nil, opTimeout)
				left++
			case !killed[s.ID]:
				request(sock, protocol.TypeKill, &protocol.Kill{Session: s.ID, Signal: "KILL"}, protocol.TypeDone, nil, opTimeout)
				killed[s.ID] = true
				left++
			default:
				left++
			}
		}
		if left == 0 {
			return fmt.Sprintf("%d killed and removed", len(killed))
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Sprintf("%d killed, some still listed after 20s", len(killed))
}

// settle waits for corkd to come back within the bounds of its start
// figures, or for bd.settle, and keeps the last figures.
func (r *result) settle(ctx context.Context, w *world, smp *sampler, bd bounds) {
	began := time.Now()
	for {
		f, err := smp.sample(w)
		if err != nil {
			r.statsErr = err
			return
		}
		r.end, r.settled = f, time.Since(began)
		if r.endWithin(bd) || time.Since(began) > bd.settle || ctx.Err() != nil {
			return
		}
		sleep(ctx, 500*time.Millisecond)
	}
}

func (r *result) endWithin(bd bounds) bool {
	return r.end.threads <= r.start.threads+bd.threadSlack && r.end.fds <= r.start.fds+bd.fdSlack &&
		r.end.goroutines <= r.start.goroutines+bd.goSlack && r.end.rssKiB <= r.start.rssKiB+bd.rssSlackKiB
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
