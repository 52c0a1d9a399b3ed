// Package bake adds corkd to a container image as one new layer, for the
// image's own architecture (each platform's, for a multi-platform index),
// keeping every existing layer and the config's entrypoint, environment,
// user and labels. It reads and writes `docker save` tarballs, OCI image
// layouts and OCI archives.
//
// An input is read once, front to back, and each layer is copied once:
// straight into the output when it can be, never recompressed. Every byte
// read is checked against the digests the image's metadata gives.
package bake

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Format is an image's container format.
type Format string

const (
	Docker     Format = "docker"      // docker save tarball
	OCILayout  Format = "oci"         // OCI image layout directory
	OCIArchive Format = "oci-archive" // OCI image layout in a tar
)

// Label records the baked corkd's version in the image config.
const Label = "org.corkvm.corkd.version"

// DefaultPath is where corkd goes in the image.
const DefaultPath = "/usr/local/bin/corkd"

// Options tune Bake.
type Options struct {
	// Path is corkd's path in the image; empty: DefaultPath.
	Path string
	// Agent returns the host path of the corkd built for arch ("amd64",
	// "arm64").
	Agent func(arch string) (string, error)
	// Format of the output; empty: the input's.
	Format Format
	// Force replaces an existing output.
	Force bool
	// MaxOutput bounds the bytes the bake writes to disk, its output and
	// spool files together; 0: the space free there, less a reserve.
	MaxOutput int64
	// Stdin and Stdout stand for "-".
	Stdin  io.Reader
	Stdout io.Writer
	// Progress, when not nil, gets a progress line, rewritten in place,
	// for a bake that takes longer than a second; Log gets notes (a
	// replaced agent, dropped attestations).
	Progress io.Writer
	Log      io.Writer
	// Created dates the history entry of the added layer; zero: now.
	Created time.Time
}

// baker is one bake's state.
type baker struct {
	ctx      context.Context
	opts     Options
	label    string // how messages name the input
	files    *inputFiles
	out      *output
	progress *progress
	created  time.Time
	agents   map[string]*agentBlob
	dropped  int // attestation manifests left out
	// What an OCI input's indexes became, by media type and digest, so
	// that each distinct image is baked once, and the work done so far.
	baked       map[string]bakedRef
	descriptors int
	imagesBaked int
	images      []*platformImage // for a docker output: its one image
}

// agentBlob is the layer holding one architecture's corkd.
type agentBlob struct {
	layer   []byte
	digest  v1.Hash
	version string
}

// Bake reads the image at in ("-": Stdin), adds corkd, and writes the result
// to out ("-": Stdout). On error, or when ctx is cancelled, nothing is left
// at out, beside it or in TMPDIR; on stdout, the archive is left without
// the index that names its images, so no tool loads it.
func Bake(ctx context.Context, in, out string, opts Options) (err error) {
	if opts.Path == "" {
		opts.Path = DefaultPath
	}
	if !filepath.IsAbs(opts.Path) || strings.HasSuffix(opts.Path, "/") {
		return fmt.Errorf("agent path %q: want an absolute file path", opts.Path)
	}
	if opts.Agent == nil {
		return errors.New("no corkd binaries to bake")
	}
	b := &baker{ctx: ctx, opts: opts, label: in, agents: map[string]*agentBlob{}, baked: map[string]bakedRef{},
		files: &inputFiles{blobs: map[string]*blob{}, links: map[string]string{}, declared: map[string]int64{}}, created: opts.Created}
	if b.created.IsZero() {
		b.created = time.Now()
	}
	if in == "-" {
		b.label = "stdin"
		if opts.Stdin == nil {
			return errors.New("no stdin to read the image from")
		}
	}
	in, inDir, err := resolveInput(in)
	if err != nil {
		return err
	}
	format := opts.Format
	if format == "" && inDir {
		format = OCILayout
	}
	if out != "-" {
		out = filepath.Clean(out)
	}
	if err := checkOutput(out, format, inDir, opts.Force); err != nil {
		return err
	}

	o, err := newOutput(out, format, inDir, opts.Force, opts.MaxOutput, opts.Stdout)
	if err != nil {
		return err
	}
	b.out = o
	defer o.cleanup()
	b.progress = newProgress(opts.Progress)
	defer b.progress.stop()

	if err := b.readInput(in, inDir); err != nil {
		return b.interrupted(err)
	}

	inFormat := OCILayout
	switch {
	case b.files.lookup("manifest.json") != nil: // docker save (newer dockers add an oci-layout too)
		inFormat = Docker
	case b.files.lookup("oci-layout") == nil:
		return fmt.Errorf("%s: neither a docker save tarball (no manifest.json) nor an OCI image (no oci-layout)", b.label)
	case !inDir:
		inFormat = OCIArchive
	}
	if err := o.settle(inFormat); err != nil {
		return err
	}
	if inFormat == Docker {
		err = b.bakeDocker()
	} else {
		err = b.bakeOCI()
	}
	if err != nil {
		return b.interrupted(err)
	}
	if b.dropped > 0 {
		b.note("dropped %d attestation manifest(s): they describe the image before the bake", b.dropped)
	}
	b.progress.stop()
	// A signal that came while the image was being written stops the
	// bake here at the latest: the output is not committed after it.
	if err := ctx.Err(); err != nil {
		return b.interrupted(err)
	}
	return b.interrupted(o.commit(ctx))
}

// resolveInput checks the input path, and says whether it is an OCI
// layout directory.
func resolveInput(in string) (string, bool, error) {
	if in == "-" {
		return in, false, nil
	}
	st, err := os.Stat(in)
	if err != nil {
		return "", false, fmt.Errorf("input: %w", err)
	}
	if !st.IsDir() {
		return in, false, nil
	}
	// A walk does not enter a root that is a symlink: start it from where
	// the link leads.
	if real, err := filepath.EvalSymlinks(in); err == nil {
		in = real
	}
	if _, err := os.Stat(filepath.Join(in, "oci-layout")); err != nil {
		return "", false, fmt.Errorf("%s: a directory without an oci-layout file is not an OCI image layout", in)
	}
	return in, true, nil
}

// readInput reads every file of the input, once.
func (b *baker) readInput(in string, inDir bool) error {
	rd := &reader{ctx: b.ctx, label: b.label, files: b.files, out: b.out, progress: b.progress, spoolIn: b.out.spoolDir}
	switch {
	case in == "-":
		return rd.readTar(interruptible(b.ctx, b.opts.Stdin))
	case inDir:
		return rd.readDir(in)
	}
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	return rd.readTar(f)
}

// interruptible reads r in a goroutine of its own, so that cancelling ctx
// ends a read that waits on a pipe: closing a blocking descriptor does not
// end a read(2) already waiting on it. The goroutine is left waiting; the
// bake returns and cleans up.
func interruptible(ctx context.Context, r io.Reader) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		_, err := io.Copy(pw, r)
		pw.CloseWithError(err)
	}()
	context.AfterFunc(ctx, func() { pr.CloseWithError(ctx.Err()) })
	return pr
}

// interrupted names a cancelled bake's error as the interruption it is.
func (b *baker) interrupted(err error) error {
	if err != nil && b.ctx.Err() != nil {
		return fmt.Errorf("interrupted: %w", b.ctx.Err())
	}
	return err
}

// agentFor reads the corkd for arch once, and makes its layer.
func (b *baker) agentFor(arch string) (*agentBlob, error) {
	if a, ok := b.agents[arch]; ok {
		return a, nil
	}
	path, err := b.opts.Agent(arch)
	if err != nil {
		return nil, err
	}
	bin, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if err := checkMachine(path, bin, arch); err != nil {
		return nil, err
	}
	mtime := time.Unix(0, 0)
	if st, err := os.Stat(path); err == nil {
		mtime = st.ModTime()
	}
	layer, err := agentLayer(strings.TrimPrefix(b.opts.Path, "/"), bin, mtime)
	if err != nil {
		return nil, err
	}
	a := &agentBlob{layer: layer, digest: hashOf(layer), version: agentVersion(bin)}
	b.agents[arch] = a
	return a, nil
}

func (b *baker) note(format string, args ...any) {
	if b.opts.Log != nil {
		b.progress.clear()
		fmt.Fprintf(b.opts.Log, "cork bake: "+format+"\n", args...)
	}
}
