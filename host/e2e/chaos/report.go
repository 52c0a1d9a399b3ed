//go:build linux

package main

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"
)

// check names every bound the run broke.
func (r *result) check(sz sizes, bd bounds) {
	broke := func(format string, a ...any) { r.broken = append(r.broken, fmt.Sprintf(format, a...)) }
	if r.corkdDied != "" {
		broke("corkd is not up: it ended during the run (%s; its address space was limited to -corkd-as-mib %d)", r.corkdDied, bd.corkdAddressSpaceMiB)
	}
	c := r.counter
	if r.pause > bd.maxPause {
		broke("root's counter paused %v (bound -max-pause %v)", r.pause.Round(time.Millisecond), bd.maxPause)
	}
	if c.broken != "" {
		broke("root's counter: %s", c.broken)
	}
	if len(c.attachErr) > 0 {
		broke("root could not resume its counter: %s", c.attachErr[0])
	}
	if r.ls.slowest > bd.maxLs {
		broke("root's cork ls took %v at %v into the run (bound -max-ls %v)", r.ls.slowest.Round(time.Millisecond), r.ls.slowAt.Round(time.Second), bd.maxLs)
	}
	if r.ls.failed > 0 {
		broke("root's cork ls failed %d of %d times; the first %s", r.ls.failed, r.ls.runs, r.ls.firstFail)
	}
	if r.tempFiles > 0 {
		broke("malformed copies left %d temporary files (.cork-cp-*) in the user's home", r.tempFiles)
	}
	if r.corkdDied != "" {
		return // its figures died with it
	}
	if r.statsErr != nil {
		broke("reading corkd's figures: %v", r.statsErr)
		return
	}
	for _, b := range []struct {
		name            string
		start, end, max int
		flag            string
	}{
		{"threads", r.start.threads, r.end.threads, bd.threadSlack, "-thread-slack"},
		{"fds", r.start.fds, r.end.fds, bd.fdSlack, "-fd-slack"},
		{"goroutines", r.start.goroutines, r.end.goroutines, bd.goSlack, "-goroutine-slack"},
		{"RSS in MiB", r.start.rssKiB >> 10, r.end.rssKiB >> 10, bd.rssSlackKiB >> 10, "-rss-slack-mib"},
	} {
		if b.end > b.start+b.max {
			broke("corkd's %s ended at %d, %d above the %d it started with (bound %s %d), %v after the attack",
				b.name, b.end, b.end-b.start, b.start, b.flag, b.max, r.settled.Round(time.Second))
		}
	}
}

func (r *result) print(out io.Writer, sz sizes, bd bounds) {
	fmt.Fprintf(out, "chaos: corkd (pid %d) attacked for %v by uid %d (%s): %s\n\n", r.pid, sz.duration, r.uid, r.user, describe(sz))
	fmt.Fprintln(out, "attackers (as the user):")
	sort.Slice(r.attackers, func(i, j int) bool { return r.attackers[i].Kind < r.attackers[j].Kind })
	for _, s := range r.attackers {
		fmt.Fprintf(out, "  %-7s %s\n", s.Kind, s)
	}
	for _, e := range r.attackerErrs {
		fmt.Fprintf(out, "  note: %s\n", e)
	}
	if r.counter != nil {
		c := r.counter
		fmt.Fprintf(out, "\nroot's counter: %d lines, %d resumes inside the buffer, %d redraws outside it, longest pause %v (bound %v)\n",
			c.lines, c.resumes, c.redrawn, r.pause.Round(time.Millisecond), bd.maxPause)
	}
	fmt.Fprintf(out, "root's cork ls: %d runs, slowest %v at %v (bound %v), %d failed\n",
		r.ls.runs, r.ls.slowest.Round(time.Millisecond), r.ls.slowAt.Round(time.Second), bd.maxLs, r.ls.failed)
	fmt.Fprintf(out, "user's sessions at the end: %s; temporary files left by copies: %d\n", r.sessionsEnd, r.tempFiles)
	if r.start != (figures{}) {
		end := fmt.Sprintf("end (%v after the attack)", r.settled.Round(time.Second))
		if r.corkdDied != "" {
			end = "end (corkd died)"
		}
		fmt.Fprintf(out, "\ncorkd        start     peak      %-30s bound on end\n", end)
		row := func(name string, s, p, e int, bound string) {
			ends := strconv.Itoa(e)
			if r.corkdDied != "" {
				ends = "-"
			}
			fmt.Fprintf(out, "%-11s %6d %8d %8s%22s   %s\n", name, s, p, ends, "", bound)
		}
		row("threads", r.start.threads, r.peak.threads, r.end.threads, fmt.Sprintf("start + %d", bd.threadSlack))
		row("fds", r.start.fds, r.peak.fds, r.end.fds, fmt.Sprintf("start + %d", bd.fdSlack))
		row("goroutines", r.start.goroutines, r.peak.goroutines, r.end.goroutines, fmt.Sprintf("start + %d", bd.goSlack))
		row("RSS MiB", r.start.rssKiB>>10, max(r.peak.rssKiB, r.hwmKiB)>>10, r.end.rssKiB>>10, fmt.Sprintf("start + %d", bd.rssSlackKiB>>10))
	}
	fmt.Fprintf(out, "\nThe run took %v.\n", r.took.Round(time.Second))
	if len(r.broken) == 0 {
		fmt.Fprintln(out, "PASS: every bound held")
		return
	}
	fmt.Fprintf(out, "FAIL: %d of the bounds broke:\n", len(r.broken))
	for _, b := range r.broken {
		fmt.Fprintf(out, "  - %s\n", b)
	}
}

func describe(sz sizes) string {
	var parts []string
	for _, a := range sz.attacks {
		switch a {
		case "conns":
			parts = append(parts, fmt.Sprintf("%d idle and half-finished connections", sz.conns))
		case "copies":
			parts = append(parts, fmt.Sprintf("up to %d malformed copies", sz.copies))
		case "huge":
			parts = append(parts, fmt.Sprintf("%d sessions at 65535x65535", sz.huge))
		case "slow":
			parts = append(parts, fmt.Sprintf("%d outputs slow to emulate", len(slowOutput)))
		case "stall":
			parts = append(parts, fmt.Sprintf("%d attachers and watchers that never read", sz.stallers))
		case "resume":
			parts = append(parts, fmt.Sprintf("up to %d clients killed mid-resume", sz.resumes))
		}
	}
	if len(parts) == 0 {
		return "no attack (a control run)"
	}
	return strings.Join(parts, ", ")
}
