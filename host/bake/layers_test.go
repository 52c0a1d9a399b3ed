package bake

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
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

// zstdWindow is a zstd frame of b (up to 128 KiB) as one raw block,
// whose header asks for a window of 1<<log bytes.
func zstdWindow(b []byte, log int) []byte {
	frame := append(bytes.Clone(zstdMagic), 0, byte(log-10)<<3)
	h := 1 | len(b)<<3 // the last block, raw
	return append(append(frame, byte(h), byte(h>>8), byte(h>>16)), b...)
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
	// Layers whose config gives their compressed bytes' digest as the
	// diff id: uncompressed, they would be other bytes.
	xzLike := append(bytes.Clone(xzMagic), bytes.Repeat([]byte("junk"), 1000)...)
	bz2Like := append([]byte("BZh9"), append([]byte{0x31, 0x41, 0x59, 0x26, 0x53, 0x59}, bytes.Repeat([]byte("junk"), 1000)...)...)
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
		{"xz named by its own digest", dockerArchive([]file{{legacy, xzLike}}, []string{legacy}, xzLike), "xz-compressed"},
		{"bzip2 named by its own digest", dockerArchive([]file{{legacy, bz2Like}}, []string{legacy}, bz2Like), "bzip2-compressed"},
		{"zstd with a 64 MiB window", dockerArchive([]file{{legacy, zstdWindow(good, 26)}}, []string{legacy}, good), "not valid zstd"},
		{"zstd with a 32 MiB window", dockerArchive([]file{{legacy, zstdWindow(good, 25)}}, []string{legacy}, good), ""},
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
				var stdout bytes.Buffer
				err := bake("-", out, Options{Stdin: bytes.NewReader(tc.in), Stdout: &stdout, Format: to.format})
				if tc.text == "" {
					if err != nil {
						t.Fatal(err)
					}
					checkBlobDigests(t, out, &stdout)
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

// checkBlobDigests checks that every blobs/sha256/HEX of an output (a
// layout directory, a tar file, or stdout's tar when out is "-") hashes to
// HEX.
func checkBlobDigests(t *testing.T, out string, stdout io.Reader) {
	t.Helper()
	check := func(name string, r io.Reader) {
		h := sha256.New()
		io.Copy(h, r)
		if hex, ok := blobHex(name); ok && hex != fmt.Sprintf("%x", h.Sum(nil)) {
			t.Errorf("the output's %s hashes to %x", name, h.Sum(nil))
		}
	}
	if st, err := os.Stat(out); err == nil && st.IsDir() {
		ents, _ := os.ReadDir(filepath.Join(out, "blobs", "sha256"))
		for _, e := range ents {
			f, err := os.Open(filepath.Join(out, "blobs", "sha256", e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			check("blobs/sha256/"+e.Name(), f)
			f.Close()
		}
		return
	}
	if out != "-" {
		f, err := os.Open(out)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		stdout = f
	}
	tr := tar.NewReader(stdout)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		check(h.Name, tr)
	}
}

// tarNames lists a tar file's entries.
func tarNames(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var names []string
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
}

// TestUnreferencedNotCarried: a large file no image names is not carried
// into a docker output, and a large layer under a name no tool uses still
// is, because the image names it (issue 25 item 6: a 4 GiB entry from a
// 4 MB .tar.gz went into the output).
func TestUnreferencedNotCarried(t *testing.T) {
	layer := bigLayer("etc/passwd")
	in := dockerArchive([]file{{"junk.bin", make([]byte, 3<<20)}, {"layers/0.tar", layer}}, []string{"layers/0.tar"}, layer)
	out := filepath.Join(t.TempDir(), "out.tar")
	if err := bake("-", out, Options{Stdin: bytes.NewReader(in), Format: Docker}); err != nil {
		t.Fatal(err)
	}
	if names := tarNames(t, out); slices.Contains(names, "junk.bin") {
		t.Fatalf("the output holds %v", names)
	}
	agent, _ := os.Stat(agents["amd64"])
	if st, _ := os.Stat(out); st.Size() > int64(len(layer))+agent.Size()+1<<20 {
		t.Fatalf("the output has %d bytes for a %d-byte layer and a %d-byte agent", st.Size(), len(layer), agent.Size())
	}
	readBaked(t, out, Docker)
}

// TestSymlinkToLayout: IN may be a symlink to an OCI layout, written
// without a trailing slash (issue 25 item 6).
func TestSymlinkToLayout(t *testing.T) {
	dir := t.TempDir()
	writeOCILayout(t, baseImage(t, "amd64", true), filepath.Join(dir, "real-oci"))
	if err := os.Symlink("real-oci", filepath.Join(dir, "link-oci")); err != nil {
		t.Fatal(err)
	}
	if err := bake(filepath.Join(dir, "link-oci"), filepath.Join(dir, "out"), Options{}); err != nil {
		t.Fatal(err)
	}
	readBaked(t, filepath.Join(dir, "out"), OCILayout)
}

// TestEmptyDescriptorNamed: a descriptor with no digest or media type is
// refused naming the file that holds it and what it lacks (issue 25 item
// 6: "blob : () is not in it").
func TestEmptyDescriptorNamed(t *testing.T) {
	dir, m := layoutWithIndex(t)
	md, _ := json.Marshal(m)
	noType := m
	noType.MediaType = ""
	nd, _ := json.Marshal(noType)
	for _, tc := range []struct{ manifests, text string }{
		{string(md) + ",{}", "index.json, manifest 2 of 2 has no digest"},
		{string(nd), "index.json, manifest 1 of 1 has no mediaType"},
	} {
		os.WriteFile(filepath.Join(dir, "index.json"), []byte(`{"schemaVersion":2,"manifests":[`+tc.manifests+`]}`), 0o644)
		err := bake(dir, filepath.Join(t.TempDir(), "out"), Options{})
		if err == nil || !strings.Contains(err.Error(), tc.text) {
			t.Fatalf("got %v, want %q", err, tc.text)
		}
	}
}

// TestStandInsRefused: a file named by a digest its bytes do not have is
// refused, wherever it comes in the input, so that it cannot stand in for
// the checked blob of that digest, or for the corkd layer, in the output:
// an OCI archive or layout whose HEX.tar, read before or after
// blobs/sha256/HEX, held other bytes baked with exit 0, the first one's
// bytes in the output under the other's name.
func TestStandInsRefused(t *testing.T) {
	img := ociImage(t, 2<<20, 1, nil)
	dir := filepath.Join(t.TempDir(), "in")
	writeOCILayout(t, img, dir)
	layers, _ := img.Layers()
	layerDigest, _ := layers[0].Digest()
	bin, _ := os.ReadFile(agents["amd64"])
	st, _ := os.Stat(agents["amd64"])
	agent, err := agentLayer(strings.TrimPrefix(DefaultPath, "/"), bin, st.ModTime())
	if err != nil {
		t.Fatal(err)
	}
	stray := bigLayer("etc/shadow")
	for _, hex := range []string{layerDigest.Hex, hashOf(agent).Hex} {
		name := hex + ".tar"
		t.Run("archive, "+name[:8], func(t *testing.T) {
			var archive bytes.Buffer
			tw := tar.NewWriter(&archive)
			tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(len(stray)), Mode: 0o644})
			tw.Write(stray)
			tw.Flush()
			var rest bytes.Buffer
			tarDir(t, dir, &rest)
			archive.Write(rest.Bytes())
			out := filepath.Join(t.TempDir(), "out")
			err := bake("-", out, Options{Stdin: &archive, Format: OCILayout})
			if err == nil || !strings.Contains(err.Error(), "hashes to") {
				checkBlobDigests(t, out, nil)
				t.Fatalf("got %v, want %s refused", err, name)
			}
			checkNothingLeft(t, filepath.Dir(out), out)
		})
		t.Run("layout, "+name[:8], func(t *testing.T) {
			os.WriteFile(filepath.Join(dir, name), stray, 0o644)
			defer os.Remove(filepath.Join(dir, name))
			out := filepath.Join(t.TempDir(), "out")
			err := bake(dir, out, Options{})
			if err == nil || !strings.Contains(err.Error(), "hashes to") {
				checkBlobDigests(t, out, nil)
				t.Fatalf("got %v, want %s refused", err, name)
			}
		})
	}
}

// zstdBomb is a zstd stream of n bytes of zeros, as frames of 64 MiB.
func zstdBomb(t *testing.T, n int64) []byte {
	t.Helper()
	var frame bytes.Buffer
	zw, _ := zstd.NewWriter(&frame)
	io.CopyN(zw, zeros{}, 64<<20)
	zw.Close()
	return bytes.Repeat(frame.Bytes(), int(n/(64<<20)))
}

// TestCompressedBounded: a file that looks compressed is uncompressed only
// if the image names it as a docker layer, and no further than a bounded
// multiple of its size (a 135 KB stray zstd of 4 GiB of zeros, named by no
// image, cost seconds; so did such a layer).
func TestCompressedBounded(t *testing.T) {
	bomb := zstdBomb(t, 2<<30)
	t.Logf("%d-byte zstd of 2 GiB", len(bomb))
	dir, _ := layoutWithIndex(t)
	var archive bytes.Buffer
	tw := tar.NewWriter(&archive)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "junk", Size: int64(len(bomb)), Mode: 0o644})
	tw.Write(bomb)
	tw.Flush()
	var rest bytes.Buffer
	tarDir(t, dir, &rest)
	archive.Write(rest.Bytes())
	start := time.Now()
	if err := bake("-", "-", Options{Stdin: &archive, Stdout: io.Discard, Format: OCIArchive}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("a stray file cost %v", d)
	}

	legacy := strings.Repeat("ab", 32) + "/layer.tar"
	in := dockerArchive([]file{{legacy, bomb}}, []string{legacy}, layerTar("etc/passwd"))
	err := bake("-", "-", Options{Stdin: bytes.NewReader(in), Stdout: io.Discard, Format: OCIArchive})
	if err == nil || !strings.Contains(err.Error(), "expands to more than") {
		t.Fatalf("got %v, want the layer refused as a bomb", err)
	}
}

// TestMetadataAfterManySmallLayers: an OCI archive in skopeo's order, its
// layers before its config and manifest, bakes when its layers of up to
// 1 MiB fill what bake holds in memory, so that the config and manifest go
// into the output as they are read ("has 10435 bytes, too many for image
// metadata").
func TestMetadataAfterManySmallLayers(t *testing.T) {
	img := ociImage(t, 2<<20, 2, func(cf *v1.ConfigFile) {
		cf.Config.Labels = map[string]string{"note": strings.Repeat("x", 10000)}
	})
	dir := filepath.Join(t.TempDir(), "in")
	writeOCILayout(t, img, dir)
	m, _ := img.Manifest()
	md, _ := img.Digest()
	var archive bytes.Buffer
	tw := tar.NewWriter(&archive)
	held := int64(0) // what the bake counts as held, as it reads
	put := func(name string, data []byte) {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(len(data)), Mode: 0o644})
		tw.Write(data)
		held += int64(entryCost + len(name))
		if len(data) <= smallFile {
			held += int64(len(data))
		}
	}
	file := func(name string) {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		put(name, data)
	}
	for _, l := range m.Layers {
		file("blobs/sha256/" + l.Digest.Hex)
	}
	// Blobs of at most 1 MiB, as the layers of many images are, until
	// what the bake holds leaves room for the names to come but not for
	// the config.
	rng := rand.NewChaCha8([32]byte{2})
	for i := 0; held < memoryLimit-4096; i++ {
		n := min(smallFile, memoryLimit-4096-held-int64(entryCost+len("blobs/sha256/")+64))
		data := make([]byte, max(n, 0))
		rng.Read(data)
		put("blobs/sha256/"+hashOf(data).Hex, data)
	}
	for _, name := range []string{"blobs/sha256/" + m.Config.Digest.Hex, "blobs/sha256/" + md.Hex, "index.json", "oci-layout"} {
		file(name)
	}
	tw.Close()
	out := filepath.Join(t.TempDir(), "out.tar")
	if err := bake("-", out, Options{Stdin: &archive, Format: OCIArchive}); err != nil {
		t.Fatal(err)
	}
	if layers, err := readBaked(t, out, OCIArchive).img.Layers(); err != nil || len(layers) != 3 {
		t.Fatalf("baked %d layers, %v; want 3", len(layers), err)
	}
	checkBlobDigests(t, out, nil)
}
