package bake

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// writeDockerPlain writes a docker tarball as podman and skopeo write them:
// uncompressed layers named HEX.tar, the config HEX.json, manifest.json
// last. mangle may change a file's bytes after its name was chosen;
// noTrailer leaves out the end-of-archive marker.
func writeDockerPlain(t *testing.T, img v1.Image, path string, mangle func(name string, b []byte) []byte, noTrailer bool) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, data []byte) {
		if mangle != nil {
			data = mangle(name, data)
		}
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(len(data)), Mode: 0o644})
		tw.Write(data)
	}
	layers, _ := img.Layers()
	var names []string
	for _, l := range layers {
		d, _ := l.DiffID()
		rc, _ := l.Uncompressed()
		data := readAll(t, rc)
		name := d.Hex + ".tar"
		add(name, data)
		names = append(names, name)
	}
	cfg, _ := img.RawConfigFile()
	cfgName := hashOf(cfg).Hex + ".json"
	add(cfgName, cfg)
	mf, _ := json.Marshal([]map[string]any{{"Config": cfgName, "RepoTags": []string{"example.com/agent:1.0"}, "Layers": names}})
	add("manifest.json", mf)
	if noTrailer {
		tw.Flush()
	} else {
		tw.Close()
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func flipLast(b []byte) []byte {
	c := bytes.Clone(b)
	c[len(c)-1] ^= 0x01
	return c
}

// TestCorruptInputsRefused: one flipped byte in a layer or blob, in each
// format, and the bake refuses, naming the file, with nothing written.
func TestCorruptInputsRefused(t *testing.T) {
	dir := t.TempDir()
	base := baseImage(t, "amd64", false)
	oneLayer := func() string {
		d, _ := layerDiffIDs(t, base)
		return d[0].Hex
	}()

	plain := filepath.Join(dir, "plain.tar")
	writeDockerPlain(t, base, plain, func(name string, b []byte) []byte {
		if name == oneLayer+".tar" {
			return flipLast(b)
		}
		return b
	}, false)
	gzipped := filepath.Join(dir, "gzip.tar")
	writeDocker(t, base, gzipped)
	flipInTar(t, gzipped, ".tar.gz")
	ociDir := filepath.Join(dir, "oci")
	writeOCILayout(t, baseImage(t, "amd64", true), ociDir)
	ociBlob := largestBlob(t, ociDir)
	data, _ := os.ReadFile(ociBlob)
	os.WriteFile(ociBlob, flipLast(data), 0o644)
	cfgFlipped := filepath.Join(dir, "config.tar")
	writeDockerPlain(t, base, cfgFlipped, func(name string, b []byte) []byte {
		if strings.HasSuffix(name, ".json") && name != "manifest.json" {
			return bytes.Replace(b, []byte("agents"), []byte("agentz"), 1)
		}
		return b
	}, false)

	for _, tc := range []struct {
		name, in string
		want     []string
	}{
		{"docker layer", plain, []string{"corrupt", oneLayer + ".tar"}},
		{"gzip'd docker layer", gzipped, []string{".tar.gz"}},
		{"OCI blob", ociDir, []string{"corrupt", filepath.Base(ociBlob)}},
		{"docker config", cfgFlipped, []string{"corrupt", "config"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, "out-"+strings.ReplaceAll(tc.name, " ", "-"))
			err := bake(tc.in, out, Options{})
			t.Logf("refused: %v", err)
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Fatalf("got %v, want an error naming %q", err, w)
				}
			}
			checkNothingLeft(t, dir, out)
		})
	}
}

// TestTruncatedInputs: a tarball cut between two entries says it is
// truncated, not that it is some other kind of file.
func TestTruncatedInputs(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "cut.tar")
	writeDockerPlain(t, baseImage(t, "amd64", false), in, nil, true)
	err := bake(in, filepath.Join(dir, "out"), Options{})
	t.Logf("refused: %v", err)
	if err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("got %v, want truncated", err)
	}
	// A plain (uncompressed) docker tarball as podman writes it bakes.
	good := filepath.Join(dir, "good.tar")
	base := baseImage(t, "amd64", false)
	writeDockerPlain(t, base, good, nil, false)
	if err := bake(good, filepath.Join(dir, "good-out.tar"), Options{}); err != nil {
		t.Fatal(err)
	}
	checkBaked(t, base, readBaked(t, filepath.Join(dir, "good-out.tar"), Docker), "amd64")
}

// TestStdinNamedAsStdin: errors about an image read from stdin say stdin,
// not the name of a temporary file.
func TestStdinNamedAsStdin(t *testing.T) {
	err := bake("-", filepath.Join(t.TempDir(), "out"), Options{Stdin: strings.NewReader(strings.Repeat("x", 2048))})
	if err == nil || !strings.HasPrefix(err.Error(), "stdin ") {
		t.Fatalf("got %v, want an error about stdin", err)
	}
}

func layerDiffIDs(t *testing.T, img v1.Image) ([]v1.Hash, error) {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return cf.RootFS.DiffIDs, nil
}

// flipInTar flips the last byte of the first entry whose name ends in
// suffix, in place.
func flipInTar(t *testing.T, path, suffix string) {
	t.Helper()
	data, _ := os.ReadFile(path)
	tr := tar.NewReader(bytes.NewReader(data))
	var off int64
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("no entry ending in %s: %v", suffix, err)
		}
		if strings.HasSuffix(h.Name, suffix) {
			// The data follows its header: find it by content.
			body := readAll(t, tr)
			i := bytes.Index(data[off:], body)
			if i < 0 {
				t.Fatal("entry data not found")
			}
			data[off+int64(i)+int64(len(body))-1] ^= 0x01
			os.WriteFile(path, data, 0o644)
			return
		}
	}
}

// largestBlob returns the path of an OCI layout's largest blob: a layer.
func largestBlob(t *testing.T, dir string) string {
	t.Helper()
	ents, _ := os.ReadDir(filepath.Join(dir, "blobs", "sha256"))
	var best string
	var size int64 = -1
	for _, e := range ents {
		if info, _ := e.Info(); info.Size() > size {
			best, size = filepath.Join(dir, "blobs", "sha256", e.Name()), info.Size()
		}
	}
	return best
}

func readAll(t *testing.T, r interface{ Read([]byte) (int, error) }) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := b.ReadFrom(r); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}
