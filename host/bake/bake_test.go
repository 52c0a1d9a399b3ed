package bake

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
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
)

// agents are real corkd binaries, built once for both architectures.
var agents = map[string]string{}

const testVersion = "v9.8.7-test"

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "bake-test")
	if err != nil {
		panic(err)
	}
	for _, arch := range []string{"amd64", "arm64"} {
		out := filepath.Join(dir, "linux-"+arch, "corkd")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+testVersion+" -X main.stamp=corkd-version:"+testVersion+";", "-o", out, "github.com/corkvm/cork/guest/cmd/corkd")
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

func writeOCIArchive(t *testing.T, img v1.Image, path string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layout")
	writeOCILayout(t, img, dir)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := tarDir(dir, f); err != nil {
		t.Fatal(err)
	}
}

// checkBaked verifies what bake promises about out, made from base.
func checkBaked(t *testing.T, base v1.Image, out, arch string) *image {
	t.Helper()
	im, err := load(out, t.TempDir())
	if err != nil {
		t.Fatalf("reading the baked image: %v", err)
	}
	oldLayers, _ := base.Layers()
	newLayers, err := im.img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(newLayers) != len(oldLayers)+1 {
		t.Fatalf("%d layers, want %d old + 1", len(newLayers), len(oldLayers))
	}
	for i, l := range oldLayers {
		a, _ := l.Digest()
		b, _ := newLayers[i].Digest()
		if a != b {
			t.Fatalf("layer %d changed: %s -> %s", i, a, b)
		}
	}
	oc, _ := base.ConfigFile()
	nc, err := im.img.ConfigFile()
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
	return im
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
			if err := Bake(in, out, Options{Agent: agentFor}); err != nil {
				t.Fatal(err)
			}
			im := checkBaked(t, base, out, tc.arch)
			if im.format != tc.format {
				t.Fatalf("wrote %s, want the input's %s", im.format, tc.format)
			}
			switch tc.format {
			case Docker:
				if im.tag == nil || im.tag.String() != "example.com/agent:1.0" {
					t.Fatalf("tag %v, want example.com/agent:1.0 kept", im.tag)
				}
			case OCILayout:
				if im.annotations["org.opencontainers.image.ref.name"] != "1.0" {
					t.Fatalf("annotations %v: ref name lost", im.annotations)
				}
				mt, _ := im.img.MediaType()
				layers, _ := im.img.Layers()
				lmt, _ := layers[len(layers)-1].MediaType()
				if mt != types.OCIManifestSchema1 || lmt != types.OCILayer {
					t.Fatalf("an OCI image got a %s layer in a %s", lmt, mt)
				}
			}
		})
	}
}

// TestBakeStreams: docker save | cork bake - - | ...
func TestBakeStreams(t *testing.T) {
	dir := t.TempDir()
	base := baseImage(t, "amd64", false)
	in := filepath.Join(dir, "in.tar")
	writeDocker(t, base, in)
	src, _ := os.ReadFile(in)
	var out bytes.Buffer
	if err := Bake("-", "-", Options{Agent: agentFor, Stdin: bytes.NewReader(src), Stdout: &out}); err != nil {
		t.Fatal(err)
	}
	res := filepath.Join(dir, "out.tar")
	os.WriteFile(res, out.Bytes(), 0o644)
	checkBaked(t, base, res, "amd64")
}

func TestBakeConvertsFormat(t *testing.T) {
	dir := t.TempDir()
	base := baseImage(t, "arm64", false)
	in, out := filepath.Join(dir, "in.tar"), filepath.Join(dir, "out-oci")
	writeDocker(t, base, in)
	if err := Bake(in, out, Options{Agent: agentFor, Format: OCILayout}); err != nil {
		t.Fatal(err)
	}
	if im := checkBaked(t, base, out, "arm64"); im.format != OCILayout {
		t.Fatalf("format %s", im.format)
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
	os.WriteFile(garbage, []byte("this is not a tar at all, not even close.........................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................."), 0o644)

	for _, tc := range []struct {
		name, in string
		opts     Options
		text     string
	}{
		{"other architecture", ppc, Options{Agent: agentFor}, "linux/ppc64le"},
		{"corrupt tarball", corrupt, Options{Agent: agentFor}, ""},
		{"not an archive", garbage, Options{Agent: agentFor}, "not a readable image archive"},
		{"agent of the wrong architecture", good, Options{Agent: func(string) (string, error) { return agents["amd64"], nil }}, "the image is linux/arm64"},
		{"missing agent", good, Options{Agent: func(string) (string, error) { return "", fmt.Errorf("no corkd for linux/arm64") }}, "no corkd for linux/arm64"},
		{"relative path", good, Options{Agent: agentFor, Path: "usr/bin/corkd"}, "want an absolute file path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, "out-"+strings.ReplaceAll(tc.name, " ", "-"))
			err := Bake(tc.in, out, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("got %v, want an error naming %q", err, tc.text)
			}
			if _, serr := os.Stat(out); serr == nil {
				t.Fatalf("an output file was left after: %v", err)
			}
			if left, _ := filepath.Glob(filepath.Join(dir, ".cork-bake-*")); len(left) > 0 {
				t.Fatalf("staging left behind: %v", left)
			}
		})
	}
}
