package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"

	"github.com/corkvm/cork/host/client"
	"github.com/corkvm/cork/host/term"
	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/copytree"
)

const copyUsage = `usage: cork cp [flags] SRC... DEST
  One side is in the guest, written with a leading colon:
    cork cp ./prompt.md :/home/node/       a file into a guest directory
    cork cp :/home/node/out ./results      a guest directory out
  - is a tar stream: on stdin as SRC, on stdout as DEST (as docker cp).
  A relative guest path is relative to the user's home.
`

func copyMain(args []string) int {
	var t target
	var user string
	var archive, follow, quiet bool
	fs := pflag.NewFlagSet("cork cp", pflag.ContinueOnError)
	t.flags(fs)
	fs.StringVarP(&user, "user", "u", "", "do the guest's side as `NAME|UID` (default: corkd's own user)")
	fs.BoolVarP(&archive, "archive", "a", false, "keep the sources' owners (uid and gid) instead of making the user the owner, and a merged directory's mode as the source's")
	fs.BoolVarP(&follow, "follow-link", "L", false, "copy what a source that is a symbolic link points to")
	fs.BoolVarP(&quiet, "quiet", "q", false, "no progress on stderr")
	fs.Usage = func() { fmt.Fprintf(os.Stderr, "%s%s", copyUsage, fs.FlagUsages()) }
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() < 2 {
		fs.Usage()
		return ExitCorkError
	}
	srcs, dest := fs.Args()[:fs.NArg()-1], fs.Arg(fs.NArg()-1)
	if code, ok := checkCopyArgs(srcs, dest); !ok {
		return code
	}

	c := &client.Copy{Software: "cork " + Version, User: user, KeepOwners: archive, Follow: follow}
	var mu sync.Mutex
	report := newCopyProgress(!quiet && term.IsTerminal(int(os.Stderr.Fd())))
	c.Problem = func(p []byte, msg string, skipped bool) {
		mu.Lock()
		defer mu.Unlock()
		report.clear()
		fmt.Fprintf(os.Stderr, "cork: cp: %q: %s\n", p, term.Printable(msg))
	}
	c.Progress = report.update

	conn, finish, err := t.dial(context.Background())
	if err != nil {
		return fail("%v", err)
	}
	res, err := runCopy(c, conn, srcs, dest)
	report.clear()
	if ferr := finish(); err == nil && ferr != nil {
		err = ferr
	}
	if err != nil {
		var perr *protocol.Error
		if errors.As(err, &perr) && perr.Kind == protocol.KindCopy {
			fmt.Fprintf(os.Stderr, "cork: cp: %s\n", term.Printable(perr.Message))
			return ExitCopyProblems
		}
		return fail("cp: %v", err)
	}
	report.summary(res, dest)
	if res.Problems > 0 {
		return ExitCopyProblems
	}
	return 0
}

// checkCopyArgs refuses a command line that names no guest side, or two,
// or a tar stream beside other sources, or several sources for a host
// destination that is not a directory.
func checkCopyArgs(srcs []string, dest string) (int, bool) {
	guest := func(s string) bool { return strings.HasPrefix(s, ":") }
	in := guest(dest)
	for _, s := range srcs {
		if guest(s) == in {
			return fail("cp: one side must be in the guest (:PATH) and the other on the host: %q and %q", s, dest), false
		}
	}
	if (slices.Contains(srcs, "-") && len(srcs) > 1) || (dest == "-" && len(srcs) > 1) {
		return fail("cp: - (a tar stream) stands alone, as the one source or the destination"), false
	}
	if !in && dest == "-" && term.IsTerminal(int(os.Stdout.Fd())) {
		return fail("cp: not writing a tar stream to a terminal; redirect stdout"), false
	}
	if !in && dest != "-" {
		if err := copytree.CheckSources([]byte(dest), len(srcs)); err != nil {
			fmt.Fprintf(os.Stderr, "cork: cp: %v\n", err)
			return ExitCopyProblems, false
		}
	}
	return 0, true
}

// runCopy copies srcs to dest over conn: into the guest when dest is a
// guest path, else out of it.
func runCopy(c *client.Copy, conn io.ReadWriteCloser, srcs []string, dest string) (*client.CopyResult, error) {
	if strings.HasPrefix(dest, ":") {
		return c.In(conn, []byte(dest[1:]), len(srcs), func(s *copytree.Sender) error {
			if srcs[0] == "-" {
				return client.SendTar(s, os.Stdin)
			}
			for _, src := range srcs {
				if err := s.Send(src); err != nil {
					return err
				}
			}
			return nil
		})
	}
	paths := make([][]byte, len(srcs))
	for i, s := range srcs {
		paths[i] = []byte(s[1:])
	}
	var sink copytree.Sink = &copytree.Dest{Path: []byte(dest), Sources: len(srcs), KeepOwners: c.KeepOwners}
	if dest == "-" {
		sink = client.NewTarSink(os.Stdout)
	}
	return c.Out(conn, paths, sink)
}

// copyProgress shows, on a terminal, a line of what a copy has done once
// it has run for a second, redrawn a few times a second.
type copyProgress struct {
	on    bool
	mu    sync.Mutex
	start time.Time
	last  time.Time
	shown bool
}

func newCopyProgress(on bool) *copyProgress {
	return &copyProgress{on: on, start: time.Now()}
}

func (p *copyProgress) update(files int, bytes int64) {
	if !p.on {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if now.Sub(p.start) < time.Second || now.Sub(p.last) < 200*time.Millisecond {
		return
	}
	p.last = now
	rate := float64(bytes) / now.Sub(p.start).Seconds()
	fmt.Fprintf(os.Stderr, "\r\033[K%s copied, %s/s, %d files", size(bytes), size(int64(rate)), files)
	p.shown = true
}

// clear takes the progress line off the terminal, for a message.
func (p *copyProgress) clear() {
	if !p.on {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shown {
		fmt.Fprint(os.Stderr, "\r\033[K")
		p.shown = false
	}
}

// summary says, on a terminal, what was copied where, as docker cp does.
func (p *copyProgress) summary(res *client.CopyResult, dest string) {
	if !p.on || dest == "-" {
		return
	}
	if !strings.HasPrefix(dest, ":") {
		if abs, err := filepath.Abs(dest); err == nil {
			dest = abs
		}
	}
	fmt.Fprintln(os.Stderr, summaryLine(res, dest))
}

// summaryLine says what landed (files and links; directories are not
// counted) and how many things did not.
func summaryLine(res *client.CopyResult, dest string) string {
	line := "Copied nothing to " + dest
	if res.Files > 0 {
		line = fmt.Sprintf("Copied %s in %s to %s", size(res.Bytes), plural(res.Files, "file"), dest)
	}
	if res.Problems > 0 {
		line += fmt.Sprintf("; %d not copied (named above)", res.Problems)
	}
	return line
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// size spells n bytes as people read them.
func size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, suffix := float64(n), ""
	for _, s := range []string{"KiB", "MiB", "GiB", "TiB"} {
		v /= unit
		suffix = s
		if v < unit {
			break
		}
	}
	return fmt.Sprintf("%.1f %s", v, suffix)
}
