package bake

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// layerTar is a layer's uncompressed tar: one file per name.
func layerTar(names ...string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Size: int64(len(n)), Mode: 0o644})
		tw.Write([]byte(n))
	}
	tw.Close()
	return buf.Bytes()
}

// bigLayer is a layer of more than 1 MiB, so that it goes into the output
// as it is read, with the files named too.
func bigLayer(names ...string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	payload := make([]byte, 2<<20)
	rand.NewChaCha8([32]byte{1}).Read(payload)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "payload", Size: int64(len(payload)), Mode: 0o644})
	tw.Write(payload)
	tw.Close()
	return append(buf.Bytes()[:buf.Len()-1024], layerTar(names...)...)
}

func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

func zstded(b []byte) []byte {
	zw, _ := zstd.NewWriter(nil)
	return zw.EncodeAll(b, nil)
}

type file struct {
	name string
	data []byte
}

// dockerArchive is a docker save tarball of the files given, in order, then
// an amd64 config whose diff ids are those given and manifest.json naming
// the layers.
func dockerArchive(files []file, layers []string, diffIDs ...[]byte) []byte {
	var ids []string
	for _, d := range diffIDs {
		ids = append(ids, hashOf(d).String())
	}
	cfg, _ := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux", "rootfs": map[string]any{"type": "layers", "diff_ids": ids}})
	cfgName := hashOf(cfg).Hex + ".json"
	mf, _ := json.Marshal([]map[string]any{{"Config": cfgName, "Layers": layers}})
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range append(files, file{cfgName, cfg}, file{"manifest.json", mf}) {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Size: int64(len(f.data)), Mode: 0o644})
		tw.Write(f.data)
	}
	tw.Close()
	return buf.Bytes()
}

// TestEveryLayerChecked: every layer of a docker archive is checked
// against its config's diff id, whatever its compression and name, to
// every kind of output, and an archive that holds a file twice is refused
// (issue 25 item 4: each of these baked with exit 0).
func TestEveryLayerChecked(t *testing.T) {
	good, other := layerTar("etc/passwd"), layerTar("etc/passwd", "etc/shadow")
	big, bigOther := bigLayer("etc/passwd"), bigLayer("etc/passwd", "etc/shadow")
	legacy := strings.Repeat("ab", 32) + "/layer.tar"
	byDigest := func(b []byte) file { return file{"blobs/sha256/" + hashOf(b).Hex, b} }
	junkZstd := append(bytes.Clone(zstdMagic), bytes.Repeat([]byte("junk"), 1000)...)
	for _, tc := range []struct {
		name string
		in   []byte
		text string // "": the bake succeeds
	}{
		{"legacy layer twice", dockerArchive([]file{{legacy, other}, {legacy, good}}, []string{legacy}, good), "twice"},
		{"zstd junk", dockerArchive([]file{{legacy, junkZstd}}, []string{legacy}, good), "not valid zstd"},
		{"zstd of another layer", dockerArchive([]file{{legacy, zstded(other)}}, []string{legacy}, good), "its config says"},
		{"gzip by digest, another layer", dockerArchive([]file{byDigest(gzipped(other))}, []string{byDigest(gzipped(other)).name}, good), "its config says"},
		{"zstd by digest, another layer", dockerArchive([]file{byDigest(zstded(other))}, []string{byDigest(zstded(other)).name}, good), "its config says"},
		{"big gzip by digest, another layer", dockerArchive([]file{byDigest(gzipped(bigOther))}, []string{byDigest(gzipped(bigOther)).name}, big), "its config says"},
		{"big gzip by digest", dockerArchive([]file{byDigest(gzipped(big))}, []string{byDigest(gzipped(big)).name}, big), ""},
		{"zstd", dockerArchive([]file{{legacy, zstded(good)}}, []string{legacy}, good), ""},
		{"gzip by digest", dockerArchive([]file{byDigest(gzipped(good))}, []string{byDigest(gzipped(good)).name}, good), ""},
		{"zstd by digest", dockerArchive([]file{byDigest(zstded(good))}, []string{byDigest(zstded(good)).name}, good), ""},
	} {
		for _, to := range []struct {
			out    string
			format Format
		}{{"out.tar", Docker}, {"out-oci", OCILayout}, {"-", OCIArchive}} {
			t.Run(tc.name+" to "+to.out, func(t *testing.T) {
				dir := t.TempDir()
				out := to.out
				if out != "-" {
					out = filepath.Join(dir, out)
				}
				err := bake("-", out, Options{Stdin: bytes.NewReader(tc.in), Stdout: io.Discard, Format: to.format})
				if tc.text == "" {
					if err != nil {
						t.Fatal(err)
					}
					return
				}
				if err == nil || !strings.Contains(err.Error(), tc.text) {
					t.Fatalf("got %v, want an error saying %q", err, tc.text)
				}
				if ents, _ := os.ReadDir(dir); len(ents) > 0 {
					t.Fatalf("left %v", ents)
				}
			})
		}
	}
}
