//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/corkvm/cork/guest/procfs"
)

// lsPoller runs root's `cork ls` every few hundred milliseconds and keeps
// the slowest answer and the failures.
type lsPoller struct {
	mu        sync.Mutex
	runs      int
	slowest   time.Duration
	slowAt    time.Duration // into the run
	failed    int
	firstFail string
}

// lsTimeout ends a cork ls that does not answer: far beyond the bound,
// so that the slowest figure says how bad it was.
const lsTimeout = 15 * time.Second

func (l *lsPoller) run(ctx context.Context, w *world, began time.Time) {
	for ctx.Err() == nil {
		start := time.Now()
		cctx, cancel := context.WithTimeout(ctx, lsTimeout)
		cmd := exec.CommandContext(cctx, w.cork, "ls", "--connect", w.agent.URL)
		out, err := cmd.CombinedOutput()
		cancel()
		took := time.Since(start)
		l.mu.Lock()
		l.runs++
		if took > l.slowest {
			// One still waiting when the run ends counts too.
			l.slowest, l.slowAt = took, start.Sub(began)
		}
		if err != nil && ctx.Err() == nil {
			l.failed++
			if errors.Is(cctx.Err(), context.DeadlineExceeded) {
				err = fmt.Errorf("no answer within %v", lsTimeout)
			}
			if l.firstFail == "" {
				l.firstFail = fmt.Sprintf("at %v: %v: %s", start.Sub(began).Round(time.Second), err, strings.TrimSpace(string(tail(out, 300))))
			}
		}
		l.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// figures are corkd's own counts at one moment.
type figures struct {
	threads, fds, goroutines, rssKiB int
}

func (f figures) max(g figures) figures {
	return figures{max(f.threads, g.threads), max(f.fds, g.fds), max(f.goroutines, g.goroutines), max(f.rssKiB, g.rssKiB)}
}

// read reads threads, fds and RSS from /proc, and goroutines from the
// stats line corkd logs on SIGUSR1.
func (w *world) read(logOffset *int64) (figures, error) {
	var f figures
	pid := w.pid()
	var err error
	if f.threads, err = procfs.StatusKiB(pid, "Threads"); err != nil {
		return f, err
	}
	if f.rssKiB, err = procfs.StatusKiB(pid, "VmRSS"); err != nil {
		return f, err
	}
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return f, err
	}
	f.fds = len(ents)
	f.goroutines, err = w.goroutines(logOffset)
	return f, err
}

// statsLine matches a whole stats line of corkd's log, newline included,
// and captures its goroutine count: the log may be read while corkd writes
// a line, and one without its newline may be cut short.
var statsLine = regexp.MustCompile(`msg=stats .*goroutines=(\d+) .*\n`)

// goroutines asks corkd for its figures and reads the line it logs after
// *offset in its log, moving *offset past it.
func (w *world) goroutines(offset *int64) (int, error) {
	if err := syscall.Kill(w.pid(), syscall.SIGUSR1); err != nil {
		return 0, err
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if n, ok := w.statsAfter(offset); ok {
			return n, nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return 0, fmt.Errorf("corkd logged no stats within 5s of SIGUSR1")
}

func (w *world) statsAfter(offset *int64) (int, bool) {
	f, err := os.Open(w.log)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() <= *offset {
		return 0, false
	}
	b := make([]byte, st.Size()-*offset)
	n, _ := f.ReadAt(b, *offset)
	b = b[:n]
	all := statsLine.FindAllSubmatchIndex(b, -1)
	if len(all) == 0 {
		return 0, false
	}
	m := all[len(all)-1]
	*offset += int64(m[1])
	g, _ := strconv.Atoi(string(b[m[2]:m[3]]))
	return g, true
}

// sampler reads corkd's figures every second and keeps the peaks.
type sampler struct {
	mu     sync.Mutex
	peak   figures
	offset int64
	err    error
}

func (s *sampler) run(ctx context.Context, w *world) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
		if w.corkdDied() != "" {
			return
		}
		s.mu.Lock()
		f, err := w.read(&s.offset)
		if err != nil && s.err == nil {
			s.err = err
		}
		s.peak = s.peak.max(f)
		s.mu.Unlock()
	}
}

// sample reads the figures now.
func (s *sampler) sample(w *world) (figures, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return w.read(&s.offset)
}
