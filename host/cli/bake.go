package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/corkvm/cork/host/bake"
	"github.com/corkvm/cork/host/term"
)

func bakeMain(args []string) int {
	fs := pflag.NewFlagSet("cork bake", pflag.ContinueOnError)
	agent := fs.String("agent", "", "add the corkd binary in `FILE` (default: the one make built for the image's architecture)")
	agentDir := fs.String("agent-dir", os.Getenv("CORK_AGENT_DIR"), "`DIR` that holds make's linux-ARCH/corkd binaries (env CORK_AGENT_DIR; default: beside cork's own directory)")
	path := fs.String("path", bake.DefaultPath, "corkd's path in the image")
	format := fs.String("format", "", "output format: docker, oci or oci-archive (default: the input's)")
	force := fs.BoolP("force", "f", false, "replace OUT if it exists")
	quiet := fs.BoolP("quiet", "q", false, "no progress line")
	maxOutput := fs.String("max-output", "", "most bytes the bake writes to disk, output and spool files together, e.g. 20G (default: the space free there, less a reserve)")
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: cork bake [flags] IN OUT\n"+
			"  IN, OUT: a docker save tarball (plain or gzip'd), an OCI layout directory or an OCI archive; - for stdin/stdout\n%s", fs.FlagUsages())
	}
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() != 2 {
		return fail("bake: want IN and OUT (cork bake [flags] IN OUT; - for stdin or stdout)")
	}
	switch f := bake.Format(*format); f {
	case "", bake.Docker, bake.OCILayout, bake.OCIArchive:
	default:
		return fail("bake: --format %q: want docker, oci or oci-archive", *format)
	}
	if fs.Arg(1) == "-" && term.IsTerminal(int(os.Stdout.Fd())) {
		return fail("bake: refusing to write an image to a terminal; redirect stdout or name a file")
	}
	created, err := sourceDateEpoch()
	if err != nil {
		return fail("bake: %v", err)
	}
	maxBytes, err := parseByteSize(*maxOutput)
	if err != nil {
		return fail("bake: --max-output %q: %v", *maxOutput, err)
	}
	opts := bake.Options{
		Path: *path, Format: bake.Format(*format), Force: *force, MaxOutput: maxBytes, Agent: agentLocator(*agent, *agentDir),
		Stdin: os.Stdin, Stdout: os.Stdout, Log: os.Stderr, Created: created,
	}
	if !*quiet && term.IsTerminal(int(os.Stderr.Fd())) {
		opts.Progress = os.Stderr
	}

	ctx, caught, stop := cancelOnSignal()
	defer stop()
	err = bake.Bake(ctx, fs.Arg(0), fs.Arg(1), opts)
	if err != nil && ctx.Err() != nil {
		left := "nothing was written"
		if fs.Arg(1) == "-" {
			left = "the archive on stdout names no image, so no tool loads it"
		}
		fmt.Fprintf(os.Stderr, "cork: bake: %v; %s\n", err, left)
		return 128 + int(<-caught)
	}
	if err != nil {
		return fail("bake: %v", err)
	}
	if ctx.Err() != nil {
		// The signal came as the output was renamed into place.
		fmt.Fprintf(os.Stderr, "cork: bake: %v came after the output was complete and in place\n", <-caught)
	}
	return 0
}

// cancelOnSignal returns a context that Ctrl-C, SIGTERM or SIGHUP cancel,
// and the signal once one came; the bake then removes what it wrote. A
// second signal exits at once, for a bake stuck where it cannot notice (a
// read from a hung file system), removing its staging areas here.
func cancelOnSignal() (context.Context, <-chan syscall.Signal, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	caught := make(chan syscall.Signal, 1)
	go func() {
		s := (<-sigs).(syscall.Signal)
		caught <- s
		cancel()
		fmt.Fprintf(os.Stderr, "cork: bake: stopping (%v again exits at once)\n", s)
		s = (<-sigs).(syscall.Signal)
		if bake.Abandon() {
			fmt.Fprintf(os.Stderr, "cork: bake: interrupted twice, after the output was complete and in place\n")
		} else {
			fmt.Fprintf(os.Stderr, "cork: bake: interrupted twice; nothing was left beside the output or in TMPDIR\n")
		}
		os.Exit(128 + int(s))
	}()
	return ctx, caught, func() { signal.Stop(sigs); cancel() }
}

// sourceDateEpoch is the time SOURCE_DATE_EPOCH sets for reproducible
// builds, or zero (now).
func sourceDateEpoch() (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return time.Time{}, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q: want seconds since 1970", s)
	}
	return time.Unix(n, 0).UTC(), nil
}

// agentLocator finds the corkd built for an architecture: --agent as given,
// else ARCHDIR/linux-ARCH/corkd, where make puts them (bin/linux-ARCH/).
func agentLocator(file, dir string) func(arch string) (string, error) {
	return func(arch string) (string, error) {
		if file != "" {
			return file, nil
		}
		var tried []string
		dirs := []string{dir}
		if dir == "" {
			if exe, err := os.Executable(); err == nil {
				dirs = []string{filepath.Join(filepath.Dir(exe), ".."), filepath.Dir(exe)}
			}
		}
		for _, d := range dirs {
			p := filepath.Join(d, "linux-"+arch, "corkd")
			if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
				return p, nil
			}
			tried = append(tried, p)
		}
		return "", fmt.Errorf("no corkd for linux/%s (looked at %s): run make, or give --agent FILE", arch, strings.Join(tried, ", "))
	}
}

// parseByteSize reads a byte count with an optional binary suffix (K, M,
// G, T); "" is 0.
func parseByteSize(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	shift := 0
	if i := strings.IndexAny(s, "KMGT"); i >= 0 && i == len(s)-1 {
		shift = 10 * (1 + strings.IndexByte("KMGT", s[i]))
		s = s[:i]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)>>shift {
		return 0, fmt.Errorf("want a positive number of bytes, with K, M, G or T after it for KiB, MiB, GiB or TiB")
	}
	return n << shift, nil
}
