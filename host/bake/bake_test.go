package bake

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/corkvm/cork/protocol"
)

// agents are real corkd binaries, built once for both architectures.
var agents = map[string]string{}

const testVersion = "v9.8.7-test"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		runChild()
	}
	dir, err := os.MkdirTemp("", "bake-test")
	if err != nil {
		panic(err)
	}
	for _, arch := range []string{"amd64", "arm64"} {
		out := filepath.Join(dir, "linux-"+arch, "corkd")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+testVersion+" -X main.stamp="+protocol.Stamp(testVersion), "-o", out, "github.com/corkvm/cork/guest/cmd/corkd")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
		if b, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building corkd for %s: %v\n%s", arch, err, b)
			os.Exit(1)
		}
		agents[arch] = out
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func agentFor(arch string) (string, error) { return agents[arch], nil }

// ociImage is a random linux/amd64 image with an OCI manifest: n layers of
// size bytes each; edit, if given, changes its config first.
func ociImage(t *testing.T, size int64, n int64, edit func(*v1.ConfigFile)) v1.Image {
	t.Helper()
	img, err := random.Image(size, n)
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	if edit != nil {
		edit(cf)
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// baseImage is a synthetic image with two layers and a config worth keeping.
func baseImage(t *testing.T, arch string, oci bool) v1.Image {
	t.Helper()
	img, err := random.Image(512, 2)
	if err != nil {
		t.Fatal(err)
	}
	if oci {
		img = mutate.MediaType(img, types.OCIManifestSchema1)
		img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	cf.Config.Entrypoint = []string{"/usr/local/bin/claude"}
	cf.Config.Cmd = []string{"--help"}
	cf.Config.Env = []string{"PATH=/usr/local/bin:/usr/bin", "NODE_VERSION=22"}
	cf.Config.User = "node"
	cf.Config.WorkingDir = "/home/node"
	cf.Config.Labels = map[string]string{"org.example.team": "agents"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func writeDocker(t *testing.T, img v1.Image, path string) {
	t.Helper()
	tag, _ := name.NewTag("example.com/agent:1.0")
	if err := tarball.WriteToFile(path, tag, img); err != nil {
		t.Fatal(err)
	}
}

func writeOCILayout(t *testing.T, img v1.Image, dir string) {
	t.Helper()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "1.0"})); err != nil {
		t.Fatal(err)
	}
}

// writeOCILayoutFullName writes a layout whose ref name is the image's
// full name, as podman save --format oci-dir writes it.
func writeOCILayoutFullName(t *testing.T, img v1.Image, dir string) {
	t.Helper()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{refNameAnnotation: "example.com/agent:1.0"})); err != nil {
		t.Fatal(err)
	}
}

func writeOCIArchive(t *testing.T, img v1.Image, path string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layout")
	writeOCILayout(t, img, dir)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tarDir(t, dir, f)
}

// tarDir writes dir's files to w as a tar, names relative to dir.
func tarDir(t *testing.T, dir string, w io.Writer) {
	t.Helper()
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		h, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		h.Name = filepath.ToSlash(rel)
		if d.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		_, err = tw.Write(data)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
}

// untarTo unpacks an OCI archive's files into dir.
func untarTo(t *testing.T, archive, dir string) {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if h.Typeflag == tar.TypeDir {
			os.MkdirAll(p, 0o755)
			continue
		}
		os.MkdirAll(filepath.Dir(p), 0o755)
		data, _ := io.ReadAll(tr)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// baked is an image bake wrote, read back by go-containerregistry.
type baked struct {
	img         v1.Image
	tag         string            // docker: the RepoTag
	annotations map[string]string // OCI: the index descriptor's
	mediaType   types.MediaType   // OCI: the manifest's
}

// readBaked reads out, a docker tarball, an OCI layout or an OCI archive.
func readBaked(t *testing.T, out string, format Format) *baked {
	t.Helper()
	switch format {
	case Docker:
		m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(out) })
		if err != nil || len(m) != 1 {
			t.Fatalf("manifest.json of %s: %v, %d images", out, err, len(m))
		}
		img, err := tarball.ImageFromPath(out, nil)
		if err != nil {
			t.Fatal(err)
		}
		b := &baked{img: img}
		if len(m[0].RepoTags) > 0 {
			b.tag = m[0].RepoTags[0]
		}
		return b
	case OCIArchive:
		dir := filepath.Join(t.TempDir(), "layout")
		untarTo(t, out, dir)
		out = dir
	}
	idx, err := layout.ImageIndexFromPath(out)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil || len(im.Manifests) != 1 {
		t.Fatalf("index of %s: %v, %+v", out, err, im)
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	return &baked{img: img, annotations: im.Manifests[0].Annotations, mediaType: im.Manifests[0].MediaType}
}

// checkBaked verifies what bake promises about an image made from base.
func checkBaked(t *testing.T, base v1.Image, out *baked, arch string) {
	t.Helper()
	oldLayers, _ := base.Layers()
	newLayers, err := out.img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(newLayers) != len(oldLayers)+1 {
		t.Fatalf("%d layers, want %d old + 1", len(newLayers), len(oldLayers))
	}
	for i, l := range oldLayers {
		a, _ := l.DiffID()
		b, _ := newLayers[i].DiffID()
		if a != b {
			t.Fatalf("layer %d changed: %s -> %s", i, a, b)
		}
	}
	oc, _ := base.ConfigFile()
	nc, err := out.img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	for field, pair := range map[string][2]any{
		"entrypoint": {oc.Config.Entrypoint, nc.Config.Entrypoint}, "cmd": {oc.Config.Cmd, nc.Config.Cmd},
		"env": {oc.Config.Env, nc.Config.Env}, "user": {oc.Config.User, nc.Config.User},
		"workdir": {oc.Config.WorkingDir, nc.Config.WorkingDir}, "arch": {oc.Architecture, nc.Architecture},
	} {
		if !reflect.DeepEqual(pair[0], pair[1]) {
			t.Errorf("config %s changed: %v -> %v", field, pair[0], pair[1])
		}
	}
	if nc.Config.Labels["org.example.team"] != "agents" || nc.Config.Labels[Label] != testVersion {
		t.Errorf("labels %v: want the old one kept and %s=%s", nc.Config.Labels, Label, testVersion)
	}
	if n := len(nc.History); n == 0 || !strings.HasPrefix(nc.History[n-1].CreatedBy, historyPrefix+testVersion) {
		t.Errorf("history %+v: want a last entry for corkd %s", nc.History, testVersion)
	}

	// The new layer: one file, root's, 0755, the corkd of the image's arch.
	rc, err := newLayers[len(newLayers)-1].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	h, err := tr.Next()
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(tr)
	want, _ := os.ReadFile(agents[arch])
	if h.Name != "usr/local/bin/corkd" || h.Mode&0o7777 != 0o755 || h.Uid != 0 || h.Gid != 0 || !bytes.Equal(got, want) {
		t.Fatalf("layer holds %s mode %o owner %d:%d, %d bytes (the %s corkd: %v)", h.Name, h.Mode, h.Uid, h.Gid, len(got), arch, bytes.Equal(got, want))
	}
	if _, err := tr.Next(); err != io.EOF {
		t.Fatalf("the layer holds more than corkd: %v", err)
	}
}

// checkOCIMediaTypes: an OCI image holds OCI media types only, whatever
// came in.
func checkOCIMediaTypes(t *testing.T, b *baked) {
	t.Helper()
	m, err := b.img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if b.mediaType != types.OCIManifestSchema1 || m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON {
		t.Errorf("index says %s, manifest %s with config %s: want OCI media types", b.mediaType, m.MediaType, m.Config.MediaType)
	}
	for _, l := range m.Layers {
		if !strings.HasPrefix(string(l.MediaType), "application/vnd.oci.image.layer.") {
			t.Errorf("layer %s has media type %s", l.Digest, l.MediaType)
		}
	}
}

func bake(in, out string, opts Options) error {
	if opts.Agent == nil {
		opts.Agent = agentFor
	}
	return Bake(context.Background(), in, out, opts)
}

func TestBakeEachFormat(t *testing.T) {
	for _, tc := range []struct {
		format Format
		arch   string
		write  func(*testing.T, v1.Image, string)
		oci    bool
	}{
		{Docker, "amd64", writeDocker, false},
		{OCILayout, "amd64", writeOCILayout, true},
		{OCIArchive, "amd64", writeOCIArchive, true},
		{Docker, "arm64", writeDocker, false},
		{OCILayout, "arm64", writeOCILayout, true},
	} {
		t.Run(string(tc.format)+"-"+tc.arch, func(t *testing.T) {
			dir := t.TempDir()
			base := baseImage(t, tc.arch, tc.oci)
			in, out := filepath.Join(dir, "in"), filepath.Join(dir, "out")
			tc.write(t, base, in)
			if err := bake(in, out, Options{}); err != nil {
				t.Fatal(err)
			}
			b := readBaked(t, out, tc.format)
			checkBaked(t, base, b, tc.arch)
			switch tc.format {
			case Docker:
				if b.tag != "example.com/agent:1.0" {
					t.Fatalf("tag %q, want example.com/agent:1.0 kept", b.tag)
				}
			default:
				if b.annotations[refNameAnnotation] != "1.0" {
					t.Fatalf("annotations %v: ref name lost", b.annotations)
				}
				checkOCIMediaTypes(t, b)
			}
		})
	}
}

// TestBakeStreams: docker save | cork bake - - | ..., and the same with a
// gzip'd tarball, which docker load accepts too.
func TestBakeStreams(t *testing.T) {
	dir := t.TempDir()
	base := baseImage(t, "amd64", false)
	in := filepath.Join(dir, "in.tar")
	writeDocker(t, base, in)
	src, _ := os.ReadFile(in)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(src)
	zw.Close()
	for name, input := range map[string][]byte{"plain": src, "gzip": gz.Bytes()} {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			if err := bake("-", "-", Options{Stdin: bytes.NewReader(input), Stdout: &out}); err != nil {
				t.Fatal(err)
			}
			res := filepath.Join(t.TempDir(), "out.tar")
			os.WriteFile(res, out.Bytes(), 0o644)
			checkBaked(t, base, readBaked(t, res, Docker), "amd64")
		})
	}
}

// TestBakeConvertsFormat: each format to each other, media types and the
// tag (docker's RepoTags, the OCI ref name) carried across.
func TestBakeConvertsFormat(t *testing.T) {
	for _, tc := range []struct {
		from, to Format
		write    func(*testing.T, v1.Image, string)
		oci      bool
		tag      string
	}{
		{Docker, OCILayout, writeDocker, false, "example.com/agent:1.0"},
		{Docker, OCIArchive, writeDocker, false, "example.com/agent:1.0"},
		{OCILayout, Docker, writeOCILayoutFullName, true, "example.com/agent:1.0"},
		{OCIArchive, OCILayout, writeOCIArchive, true, "1.0"},
	} {
		t.Run(string(tc.from)+"-to-"+string(tc.to), func(t *testing.T) {
			dir := t.TempDir()
			base := baseImage(t, "arm64", tc.oci)
			in, out := filepath.Join(dir, "in"), filepath.Join(dir, "out")
			tc.write(t, base, in)
			if err := bake(in, out, Options{Format: tc.to}); err != nil {
				t.Fatal(err)
			}
			b := readBaked(t, out, tc.to)
			checkBaked(t, base, b, "arm64")
			if tc.to == Docker {
				if b.tag != tc.tag {
					t.Errorf("RepoTag %q, want %q", b.tag, tc.tag)
				}
				return
			}
			checkOCIMediaTypes(t, b)
			if b.annotations[refNameAnnotation] != tc.tag {
				t.Errorf("ref name %q, want %q", b.annotations[refNameAnnotation], tc.tag)
			}
		})
	}
}

// TestBakeRefuses: each failure names the problem and leaves no output.
func TestBakeRefuses(t *testing.T) {
	dir := t.TempDir()
	ppc := filepath.Join(dir, "ppc.tar")
	img := baseImage(t, "amd64", false)
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.Architecture = "ppc64le"
	img, _ = mutate.ConfigFile(img, cf)
	writeDocker(t, img, ppc)

	good := filepath.Join(dir, "good.tar")
	writeDocker(t, baseImage(t, "arm64", false), good)
	whole, _ := os.ReadFile(good)
	corrupt := filepath.Join(dir, "corrupt.tar")
	os.WriteFile(corrupt, whole[:len(whole)/2], 0o644)
	garbage := filepath.Join(dir, "garbage")
	os.WriteFile(garbage, bytes.Repeat([]byte("this is not a tar at all. "), 40), 0o644)

	for _, tc := range []struct {
		name, in string
		opts     Options
		text     string
	}{
		{"other architecture", ppc, Options{}, "linux/ppc64le"},
		{"corrupt tarball", corrupt, Options{}, "truncated"},
		{"not an archive", garbage, Options{}, "not an image archive"},
		{"agent of the wrong architecture", good, Options{Agent: func(string) (string, error) { return agents["amd64"], nil }}, "is built for linux/amd64, the image is linux/arm64"},
		{"missing agent", good, Options{Agent: func(string) (string, error) { return "", fmt.Errorf("no corkd for linux/arm64") }}, "no corkd for linux/arm64"},
		{"relative path", good, Options{Path: "usr/bin/corkd"}, "want an absolute file path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, "out-"+strings.ReplaceAll(tc.name, " ", "-"))
			err := bake(tc.in, out, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("got %v, want an error naming %q", err, tc.text)
			}
			checkNothingLeft(t, dir, out)
		})
	}
}

// checkNothingLeft fails when out or a staging directory beside it exists.
func checkNothingLeft(t *testing.T, dir, out string) {
	t.Helper()
	if _, err := os.Stat(out); err == nil {
		t.Fatalf("an output was left at %s", out)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".cork-bake-*")); len(left) > 0 {
		t.Fatalf("staging left behind: %v", left)
	}
}
