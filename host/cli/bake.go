package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"

	"github.com/corkvm/cork/host/bake"
)

func bakeMain(args []string) int {
	fs := pflag.NewFlagSet("cork bake", pflag.ContinueOnError)
	agent := fs.String("agent", "", "the corkd binary to add (default: the one make built for the image's architecture)")
	agentDir := fs.String("agent-dir", os.Getenv("CORK_AGENT_DIR"), "where make's linux-ARCH/corkd binaries are (env CORK_AGENT_DIR; default: beside cork's own directory)")
	path := fs.String("path", bake.DefaultPath, "corkd's path in the image")
	format := fs.String("format", "", "output format: docker, oci or oci-archive (default: the input's)")
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: cork bake [flags] IN OUT\n"+
			"  IN, OUT: a docker save tarball, an OCI layout directory or an OCI archive; - for stdin/stdout\n%s", fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return fail("%v", err)
	}
	if fs.NArg() != 2 {
		return fail("bake: want IN and OUT (cork bake [flags] IN OUT; - for stdin or stdout)")
	}
	switch f := bake.Format(*format); f {
	case "", bake.Docker, bake.OCILayout, bake.OCIArchive:
	default:
		return fail("bake: --format %q: want docker, oci or oci-archive", *format)
	}
	err := bake.Bake(fs.Arg(0), fs.Arg(1), bake.Options{
		Path: *path, Format: bake.Format(*format), Agent: agentLocator(*agent, *agentDir),
		Stdin: os.Stdin, Stdout: os.Stdout,
	})
	if err != nil {
		return fail("bake: %v", err)
	}
	return 0
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
