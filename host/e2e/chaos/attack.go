//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// attackCommand is the first argument of this program re-executed as the
// admitted user, to make one attack.
const attackCommand = "attack"

// attackArgs is what an attacker process is told.
type attackArgs struct {
	kind    string
	sock    string
	home    string
	n       int
	from    time.Time // the attack starts then
	until   time.Time // the attack ends by then, whatever n says
	seed    uint64
	session string // resume-client: the session to resume
	name    string // the attack's session names start with it
}

func (a attackArgs) argv() []string {
	return []string{attackCommand, "-kind", a.kind, "-sock", a.sock, "-home", a.home, "-n", strconv.Itoa(a.n),
		"-from", strconv.FormatInt(a.from.UnixNano(), 10), "-until", strconv.FormatInt(a.until.UnixNano(), 10), "-seed", strconv.FormatUint(a.seed, 10),
		"-session", a.session, "-name", a.name}
}

var attacks = map[string]func(attackArgs, *tally){
	"conns":         attackConns,
	"copies":        attackCopies,
	"huge":          attackHuge,
	"slow":          attackSlow,
	"stall":         attackStall,
	"resume":        attackResume,
	"resume-client": resumeClient,
}

// attackMain runs one attack and prints its tally as JSON on stdout.
func attackMain(args []string) int {
	var a attackArgs
	var from, until int64
	fs := flag.NewFlagSet(attackCommand, flag.ContinueOnError)
	fs.StringVar(&a.kind, "kind", "", "the attack")
	fs.StringVar(&a.sock, "sock", "", "corkd's socket")
	fs.StringVar(&a.home, "home", "", "the user's home")
	fs.IntVar(&a.n, "n", 0, "how many")
	fs.Int64Var(&from, "from", 0, "start, Unix nanoseconds")
	fs.Int64Var(&until, "until", 0, "end, Unix nanoseconds")
	fs.Uint64Var(&a.seed, "seed", 1, "random seed")
	fs.StringVar(&a.session, "session", "", "session")
	fs.StringVar(&a.name, "name", "", "session name prefix")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	a.from, a.until = time.Unix(0, from), time.Unix(0, until)
	f, ok := attacks[a.kind]
	if !ok {
		fmt.Fprintf(os.Stderr, "chaos attack: no attack %q\n", a.kind)
		return 2
	}
	t := newTally(a.kind)
	// SIGTERM ends the attack early with what it counted so far.
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		time.Sleep(time.Until(a.from))
		f(a, t)
		close(done)
	}()
	select {
	case <-done:
	case <-term:
		t.add("stopped early", 1)
	}
	json.NewEncoder(os.Stdout).Encode(t.summary())
	return 0
}

// summary is what an attacker reports: counts of what happened, the
// slowest of each timed operation, and its first errors.
type summary struct {
	Kind    string
	Counts  map[string]int
	Slowest map[string]time.Duration
	Errors  []string
}

// tally collects a summary from an attacker's goroutines.
type tally struct {
	mu sync.Mutex
	s  summary
}

func newTally(kind string) *tally {
	return &tally{s: summary{Kind: kind, Counts: map[string]int{}, Slowest: map[string]time.Duration{}}}
}

func (t *tally) add(what string, n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.s.Counts[what] += n
}

// max keeps the largest value seen for what: a peak, not a sum.
func (t *tally) max(what string, n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.s.Counts[what] = max(t.s.Counts[what], n)
}

func (t *tally) took(what string, d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.s.Slowest[what] = max(t.s.Slowest[what], d)
}

// fail counts an error under what and keeps the first few different
// messages.
func (t *tally) fail(what string, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.s.Counts[what+" failed"]++
	msg := what + ": " + err.Error()
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	if len(t.s.Errors) < 6 && !slices.Contains(t.s.Errors, msg) {
		t.s.Errors = append(t.s.Errors, msg)
	}
}

// summary copies the tally: after SIGTERM the attack's goroutines still
// add to it while it is printed.
func (t *tally) summary() summary {
	t.mu.Lock()
	defer t.mu.Unlock()
	return summary{Kind: t.s.Kind, Counts: maps.Clone(t.s.Counts), Slowest: maps.Clone(t.s.Slowest), Errors: slices.Clone(t.s.Errors)}
}

func (s summary) String() string {
	var b strings.Builder
	keys := make([]string, 0, len(s.Counts))
	for k := range s.Counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%d", k, s.Counts[k])
	}
	keys = keys[:0]
	for k := range s.Slowest {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, " slowest-%s=%v", k, s.Slowest[k].Round(time.Millisecond))
	}
	for _, e := range s.Errors {
		fmt.Fprintf(&b, "\n      %s", e)
	}
	return strings.TrimSpace(b.String())
}

// runAttacker runs a as the user and returns its summary. It is stopped
// by its pid if it outlives its end by overstay, or when ctx ends.
func (w *world) runAttacker(ctx context.Context, a attackArgs, overstay time.Duration) (summary, error) {
	cmd := exec.Command(w.attacker, a.argv()...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(w.uid), Gid: uint32(w.gid), Groups: []uint32{}}}
	cmd.Dir = w.home
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := w.procs.start(cmd); err != nil {
		return summary{Kind: a.kind}, err
	}
	defer w.procs.forget(cmd)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	late := false
	select {
	case err = <-done:
	case <-time.After(time.Until(a.until) + overstay):
		err, late = stop(cmd, done), true
	case <-ctx.Done():
		err = stop(cmd, done)
	}
	s := summary{Kind: a.kind}
	if jerr := json.Unmarshal(lastLine(stdout.Bytes()), &s); jerr != nil && err == nil {
		err = fmt.Errorf("no summary (%v)", jerr)
	}
	switch {
	case err != nil:
		return s, fmt.Errorf("attacker %s: %v; its stderr: %s", a.kind, err, tail(stderr.Bytes(), 500))
	case late:
		return s, fmt.Errorf("attacker %s was still at work %v after the attack's end: stopped", a.kind, overstay)
	}
	return s, nil
}

// stop asks an attacker to stop with SIGTERM, for its summary, and kills
// it if it has not within a few seconds.
func stop(cmd *exec.Cmd, done <-chan error) error {
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		return err
	case <-time.After(3 * time.Second):
		cmd.Process.Kill()
		return fmt.Errorf("killed after SIGTERM (%v)", <-done)
	}
}

func lastLine(b []byte) []byte {
	b = bytes.TrimRight(b, "\n")
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		return b[i+1:]
	}
	return b
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// pastEnd reports whether the attack's time is up.
func (a attackArgs) pastEnd() bool { return time.Now().After(a.until) }
