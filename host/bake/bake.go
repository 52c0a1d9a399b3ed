// Package bake adds corkd to a container image as one new layer, for the
// image's own architecture, keeping every existing layer and the config's
// entrypoint, environment, user and labels. It reads and writes `docker
// save` tarballs, OCI image layouts and OCI archives (a layout in a tar)
// through go-containerregistry.
package bake

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
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
	// Stdin and Stdout stand for "-".
	Stdin  io.Reader
	Stdout io.Writer
}

// image is an input image and what its format needs to write it back.
type image struct {
	img         v1.Image
	format      Format
	tag         *name.Tag         // docker: the tag it was saved under
	annotations map[string]string // OCI: the descriptor's, the ref name among them
}

// Bake reads the image at in ("-": Stdin), adds corkd, and writes the result
// to out ("-": Stdout). On error nothing is left at out.
func Bake(in, out string, opts Options) error {
	if opts.Path == "" {
		opts.Path = DefaultPath
	}
	if !filepath.IsAbs(opts.Path) || strings.HasSuffix(opts.Path, "/") {
		return fmt.Errorf("agent path %q: want an absolute file path", opts.Path)
	}
	tmp, err := os.MkdirTemp("", "cork-bake")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	if in == "-" {
		in = filepath.Join(tmp, "stdin")
		if err := copyToFile(in, opts.Stdin); err != nil {
			return fmt.Errorf("reading the image from stdin: %w", err)
		}
	}
	src, err := load(in, tmp)
	if err != nil {
		return err
	}
	baked, err := addAgent(src.img, opts)
	if err != nil {
		return err
	}
	src.img = baked
	if opts.Format != "" {
		src.format = opts.Format
	}
	return write(src, out, tmp, opts.Stdout)
}

// load detects in's format and reads its one image.
func load(in, tmp string) (*image, error) {
	st, err := os.Stat(in)
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		if _, err := os.Stat(filepath.Join(in, "oci-layout")); err != nil {
			return nil, fmt.Errorf("%s: a directory without an oci-layout file is not an OCI image layout", in)
		}
		return loadLayout(in)
	}
	names, err := tarNames(in)
	if err != nil {
		return nil, fmt.Errorf("%s: not a readable image archive: %v", in, err)
	}
	switch {
	case names["manifest.json"]: // docker save (newer dockers add an oci-layout too)
		return loadDocker(in)
	case names["oci-layout"]:
		dir := filepath.Join(tmp, "in-layout")
		if err := untar(in, dir); err != nil {
			return nil, fmt.Errorf("%s: %v", in, err)
		}
		img, err := loadLayout(dir)
		if err != nil {
			return nil, err
		}
		img.format = OCIArchive
		return img, nil
	}
	return nil, fmt.Errorf("%s: neither a docker save tarball (no manifest.json) nor an OCI archive (no oci-layout)", in)
}

func loadDocker(path string) (*image, error) {
	m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(path) })
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	if len(m) != 1 {
		return nil, fmt.Errorf("%s holds %d images; bake takes one (docker save one image)", path, len(m))
	}
	im := &image{format: Docker}
	if len(m[0].RepoTags) > 0 {
		t, err := name.NewTag(m[0].RepoTags[0])
		if err != nil {
			return nil, fmt.Errorf("%s: tag %q: %v", path, m[0].RepoTags[0], err)
		}
		im.tag = &t
	}
	im.img, err = tarball.ImageFromPath(path, im.tag)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return im, nil
}

func loadLayout(dir string) (*image, error) {
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", dir, err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("%s: %v", dir, err)
	}
	if len(m.Manifests) != 1 {
		return nil, fmt.Errorf("%s holds %d manifests; bake takes one single-platform image", dir, len(m.Manifests))
	}
	d := m.Manifests[0]
	if !d.MediaType.IsImage() {
		return nil, fmt.Errorf("%s: %s is a %s, not a single-platform image; bake each platform's image on its own", dir, d.Digest, d.MediaType)
	}
	img, err := idx.Image(d.Digest)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", dir, err)
	}
	return &image{img: img, format: OCILayout, annotations: d.Annotations}, nil
}

// addAgent appends the layer holding corkd for img's architecture and the
// version label.
func addAgent(img v1.Image, opts Options) (v1.Image, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading the image config: %v", err)
	}
	if cf.OS != "linux" || (cf.Architecture != "amd64" && cf.Architecture != "arm64") {
		return nil, fmt.Errorf("the image is for %s/%s; corkd is built for linux/amd64 and linux/arm64", cf.OS, cf.Architecture)
	}
	if opts.Agent == nil {
		return nil, errors.New("no corkd binaries to bake")
	}
	path, err := opts.Agent(cf.Architecture)
	if err != nil {
		return nil, err
	}
	bin, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if err := checkMachine(path, cf.Architecture); err != nil {
		return nil, err
	}
	version := agentVersion(bin)

	mt, err := img.MediaType()
	if err != nil {
		return nil, err
	}
	layerType := types.DockerLayer
	if mt == types.OCIManifestSchema1 {
		layerType = types.OCILayer
	}
	layerTar, err := fileLayer(strings.TrimPrefix(opts.Path, "/"), bin)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(layerType))
	if err != nil {
		return nil, err
	}
	baked, err := mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{
		Author:    "cork bake",
		CreatedBy: fmt.Sprintf("cork bake: corkd %s at %s", version, opts.Path),
		Created:   v1.Time{Time: time.Unix(0, 0).UTC()},
	}})
	if err != nil {
		return nil, err
	}
	bcf, err := baked.ConfigFile()
	if err != nil {
		return nil, err
	}
	bcf = bcf.DeepCopy()
	if bcf.Config.Labels == nil {
		bcf.Config.Labels = map[string]string{}
	}
	bcf.Config.Labels[Label] = version
	return mutate.ConfigFile(baked, bcf)
}

// fileLayer is an uncompressed layer holding one root-owned executable.
// Only the file is in it: entries for its parent directories would replace
// the base image's own metadata for them.
func fileLayer(name string, data []byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg, Name: name, Mode: 0o755, Uid: 0, Gid: 0,
		Uname: "root", Gname: "root", Size: int64(len(data)), ModTime: time.Unix(0, 0),
		Format: tar.FormatPAX,
	}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(data); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// checkMachine refuses a corkd built for another architecture than the
// image's: it would fail only when the VM runs it.
func checkMachine(path, arch string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s: not a Linux executable: %v", path, err)
	}
	defer f.Close()
	want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[arch]
	if f.Machine != want {
		return fmt.Errorf("%s is built for %s, the image is linux/%s", path, f.Machine, arch)
	}
	return nil
}

// The version marker corkd's build stamps into the binary (see
// guest/cmd/corkd): "corkd-version:VERSION;".
var (
	stampMarker = []byte("corkd-version:")
	stampEnd    = []byte(";")
)

// agentVersion reads the version stamped into a corkd binary, without
// running it: it may be built for another architecture.
func agentVersion(bin []byte) string {
	for rest := bin; ; {
		i := bytes.Index(rest, stampMarker)
		if i < 0 {
			return "unknown"
		}
		rest = rest[i+len(stampMarker):]
		if j := bytes.Index(rest, stampEnd); j > 0 && j <= 128 && printable(rest[:j]) {
			return string(rest[:j])
		}
	}
}

func printable(b []byte) bool {
	for _, c := range b {
		if c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

// write writes im in its format to out ("-": stdout) by way of a temporary
// file or directory beside out, so that a failure leaves nothing there.
func write(im *image, out, tmp string, stdout io.Writer) error {
	if out == "-" {
		if im.format == OCILayout {
			return errors.New("an OCI layout is a directory and cannot go to stdout; use --format oci-archive or docker")
		}
		return writeTo(im, stdout, tmp)
	}
	if _, err := os.Stat(out); err == nil && im.format == OCILayout {
		return fmt.Errorf("%s exists; bake writes a new OCI layout directory", out)
	}
	staging, err := os.MkdirTemp(filepath.Dir(out), ".cork-bake-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(staging)
	if im.format == OCILayout {
		dir := filepath.Join(staging, "layout")
		if err := writeLayout(im, dir); err != nil {
			return err
		}
		return os.Rename(dir, out)
	}
	file := filepath.Join(staging, "image.tar")
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if err := writeTo(im, f, tmp); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(file, out)
}

// writeTo streams a docker tarball or an OCI archive.
func writeTo(im *image, w io.Writer, tmp string) error {
	switch im.format {
	case Docker:
		var ref name.Reference
		if im.tag != nil {
			ref = *im.tag
		} else {
			d, err := im.img.Digest()
			if err != nil {
				return err
			}
			// Untagged in, untagged out: a digest names no tag.
			if ref, err = name.NewDigest("corkd-baked@" + d.String()); err != nil {
				return err
			}
		}
		return tarball.Write(ref, im.img, w)
	case OCIArchive:
		dir := filepath.Join(tmp, "out-layout")
		if err := writeLayout(im, dir); err != nil {
			return err
		}
		return tarDir(dir, w)
	}
	return fmt.Errorf("unknown output format %q (want docker, oci or oci-archive)", im.format)
}

func writeLayout(im *image, dir string) error {
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	var opts []layout.Option
	if len(im.annotations) > 0 {
		opts = append(opts, layout.WithAnnotations(im.annotations))
	}
	return p.AppendImage(im.img, opts...)
}

func copyToFile(path string, r io.Reader) error {
	if r == nil {
		return errors.New("no stdin")
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
