//go:build linux

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/corkvm/cork/guest/procfs"
	"github.com/corkvm/cork/host/client"
	"github.com/corkvm/cork/host/e2e/termtest"
	"github.com/corkvm/cork/host/transport"
	"github.com/corkvm/cork/protocol"
)

// TestSoak runs many sessions at once, half on PTYs and half on pipes, each
// echoing its own random stream back while resizes and signals fly, then
// checks that every byte came back in order to the session that sent it and
// that corkd returned to where it started: file descriptors, goroutines,
// zombies and memory. `make soak` runs the long form (CORK_SOAK=long: 64
// sessions of 8 MiB each way); make test runs a short one.
func TestSoak(t *testing.T) {
	sessions, size := 16, 1<<20
	if os.Getenv("CORK_SOAK") == "long" {
		sessions, size = 64, 8<<20
	}
	a := startAgent(t)
	pid := a.cmd.Process.Pid
	idle := corkdStats(t, a)
	began := time.Now()

	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	var peakSessions atomic.Int32
	for i := 0; i < sessions; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := soakSession(a, i, size, i%2 == 0); err != nil {
				errs <- fmt.Errorf("session %d (tty %v): %w", i, i%2 == 0, err)
			}
		}()
	}
	// While they run: how many are open at once, and the peak RSS.
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				if n := int32(len(children(pid))); n > peakSessions.Load() {
					peakSessions.Store(n)
				}
			}
		}
	}()
	wg.Wait()
	close(stop)
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	elapsed := time.Since(began)

	// corkd settles back: no session, no leaked descriptor or goroutine,
	// and its memory returned (it waits for a quiet moment to do that).
	var after stats
	termtest.WaitFor(t, "corkd to return to its idle figures", 20*time.Second, func() bool {
		after = corkdStats(t, a)
		// Idle may have caught the readiness probe's connection closing:
		// no leak means no more than then.
		return after.sessions == 0 && after.fds <= idle.fds && after.goroutines <= idle.goroutines &&
			after.rss <= idle.rss+8<<10
	})
	if z := zombiesOf(pid); z > 0 {
		t.Errorf("%d zombie children of corkd", z)
	}
	peakRSS, _ := procfs.StatusKiB(pid, "VmHWM")
	if after.rss > idle.rss+8<<10 {
		t.Errorf("corkd RSS %d KiB after the soak, %d KiB idle", after.rss, idle.rss)
	}
	t.Logf("soak: %d sessions (%d tty, %d pipe, up to %d processes at once), %d MiB each way each, %v",
		sessions, (sessions+1)/2, sessions/2, peakSessions.Load(), size>>20, elapsed.Round(time.Millisecond))
	t.Logf("corkd fds %d -> %d, goroutines %d -> %d, RSS idle %d KiB, peak %d KiB, after %d KiB",
		idle.fds, after.fds, idle.goroutines, after.goroutines, idle.rss, peakRSS, after.rss)
}

// soakSession echoes size random bytes through cat and compares them as
// they come back. A PTY session first goes raw so that cat sees and returns
// bytes unchanged, and ends by a forwarded SIGTERM since EOF is a byte there.
func soakSession(a *agent, i, size int, tty bool) error {
	seed := uint64(i + 1)
	ready := make(chan struct{})
	check := &echoCheck{want: rand.NewChaCha8(seedBytes(seed)), remaining: size, ready: ready, tty: tty, done: make(chan struct{})}
	req := protocol.Exec{Argv: []string{"cat"}, Stdin: true}
	if tty {
		req = protocol.Exec{Argv: []string{"sh", "-c", "stty raw -echo && echo READY && exec cat"}, Stdin: true, TTY: true,
			Size: protocol.WindowSize{Cols: 80, Rows: 24}}
	} else {
		close(ready)
	}
	sizes := client.NewSizeSlot()
	sigs := make(chan string, 1)
	in := &gatedReader{r: io.LimitReader(rand.NewChaCha8(seedBytes(seed)), int64(size)), ready: ready}
	if tty {
		// EOF on a raw PTY is a byte (VEOF) that cat would echo: hold
		// it back until the session is over.
		finished := make(chan struct{})
		defer close(finished)
		in.hold = finished
	}
	s := &client.Session{Exec: req, Stdin: in, Stdout: check, Stderr: check, Sizes: sizes, Signals: sigs}

	// Resizes and harmless signals fly until the stream is back.
	go func() {
		rng := rand.New(rand.NewPCG(seed, 0))
		for {
			select {
			case <-check.done:
				if tty {
					sigs <- "TERM"
				}
				return
			case <-time.After(5 * time.Millisecond):
				sizes.Put(protocol.WindowSize{Cols: uint16(20 + rng.IntN(200)), Rows: uint16(5 + rng.IntN(60))})
				select {
				case sigs <- "CONT":
				default:
				}
			}
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := transport.Dial(ctx, a.url, transport.Options{})
	if err != nil {
		return err
	}
	exit, err := s.Run(ctx, conn)
	switch {
	case err != nil:
		return err
	case check.err != nil:
		return check.err
	case check.remaining != 0:
		return fmt.Errorf("%d of %d bytes never came back", check.remaining, size)
	case !tty && exit.Code != 0, tty && exit.Code != 128+int(syscall.SIGTERM):
		return fmt.Errorf("exit %+v", exit)
	}
	return nil
}

func seedBytes(seed uint64) [32]byte {
	var b [32]byte
	copy(b[:], strconv.FormatUint(seed, 10))
	return b
}

// gatedReader holds input back until the program is ready for it, and
// when hold is set, holds its end back until hold is closed.
type gatedReader struct {
	r     io.Reader
	ready chan struct{}
	hold  chan struct{}
}

func (g *gatedReader) Read(p []byte) (int, error) {
	<-g.ready
	n, err := g.r.Read(p)
	if err == io.EOF && g.hold != nil {
		<-g.hold
	}
	return n, err
}

// echoCheck compares output with the stream it should echo, byte for byte.
type echoCheck struct {
	want      io.Reader
	remaining int
	tty       bool
	ready     chan struct{}
	seenReady bool
	pending   []byte
	done      chan struct{}
	err       error
}

func (c *echoCheck) Write(p []byte) (int, error) {
	n := len(p)
	if c.tty && !c.seenReady {
		c.pending = append(c.pending, p...)
		i := bytes.Index(c.pending, []byte("READY\n"))
		if i < 0 {
			return n, nil
		}
		c.seenReady = true
		p = c.pending[i+len("READY\n"):]
		close(c.ready)
	}
	if c.err != nil || len(p) == 0 {
		return n, nil
	}
	if len(p) > c.remaining {
		c.err = fmt.Errorf("%d bytes more than were sent", len(p)-c.remaining)
		return n, nil
	}
	want := make([]byte, len(p))
	io.ReadFull(c.want, want)
	if !bytes.Equal(want, p) {
		c.err = fmt.Errorf("bytes differ at %d before the end", c.remaining)
		return n, nil
	}
	if c.remaining -= len(p); c.remaining == 0 {
		close(c.done)
	}
	return n, nil
}

type stats struct{ sessions, goroutines, fds, rss int }

var statsLine = regexp.MustCompile(`msg=stats sessions=(\d+) goroutines=(\d+) fds=(\d+) rss_kib=(\d+)`)

// corkdStats asks corkd for its figures with SIGUSR1 and reads its log.
func corkdStats(t *testing.T, a *agent) stats {
	t.Helper()
	before := len(statsLine.FindAllString(a.logs.String(), -1))
	a.cmd.Process.Signal(syscall.SIGUSR1)
	var m []string
	termtest.WaitFor(t, "corkd's stats", 10*time.Second, func() bool {
		all := statsLine.FindAllStringSubmatch(a.logs.String(), -1)
		if len(all) > before {
			m = all[len(all)-1]
			return true
		}
		return false
	})
	n := func(s string) int { v, _ := strconv.Atoi(s); return v }
	return stats{n(m[1]), n(m[2]), n(m[3]), n(m[4])}
}

// children lists the processes whose parent is pid, with their states.
func children(pid int) map[int]string {
	out := map[int]string{}
	pids, _ := procfs.Pids()
	for _, c := range pids {
		if st, err := procfs.ReadStat(c); err == nil && st.PPID == pid {
			out[c] = st.State
		}
	}
	return out
}

func zombiesOf(pid int) int {
	n := 0
	for _, st := range children(pid) {
		if st == "Z" {
			n++
		}
	}
	return n
}
