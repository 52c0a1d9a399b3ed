package bake

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// layoutWithIndex writes an OCI layout of one amd64 image and returns its
// directory and its manifest's descriptor, for tests that add indexes.
func layoutWithIndex(t *testing.T) (string, v1.Descriptor) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "in")
	writeOCILayout(t, baseImage(t, "amd64", true), dir)
	var idx v1.IndexManifest
	data, _ := os.ReadFile(filepath.Join(dir, "index.json"))
	if err := json.Unmarshal(data, &idx); err != nil {
		t.Fatal(err)
	}
	m := idx.Manifests[0]
	m.Annotations = nil
	return dir, m
}

// putBlob writes v as JSON into the layout's blobs and returns its
// descriptor.
func putBlob(t *testing.T, dir string, mt types.MediaType, v any) v1.Descriptor {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	h := hashOf(data)
	if err := os.WriteFile(filepath.Join(dir, "blobs", "sha256", h.Hex), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return v1.Descriptor{MediaType: mt, Digest: h, Size: int64(len(data))}
}

// indexOf is an OCI index naming d n times.
func indexOf(d v1.Descriptor, n int) *v1.IndexManifest {
	idx := &v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
	for range n {
		idx.Manifests = append(idx.Manifests, d)
	}
	return idx
}

// setIndex makes idx the layout's index.json.
func setIndex(t *testing.T, dir string, idx *v1.IndexManifest) {
	t.Helper()
	data, _ := json.Marshal(idx)
	if err := os.WriteFile(filepath.Join(dir, "index.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestEachImageBakedOnce: an index that names one manifest 3,000 times,
// and three indexes that each name the next 100 times (a million images
// for a walk that follows every name), bake in well under a second: each
// distinct manifest is baked once and the agent's layer hashed once (issue
// 25 item 3: the first ran 397 s, the second until killed).
func TestEachImageBakedOnce(t *testing.T) {
	dir, m := layoutWithIndex(t)
	in := filepath.Join(dir)
	for _, tc := range []struct {
		name  string
		index func() *v1.IndexManifest
	}{
		{"one manifest 3000 times", func() *v1.IndexManifest { return indexOf(m, 3000) }},
		{"fan-out to a million", func() *v1.IndexManifest {
			d := m
			for range 3 {
				d = putBlob(t, dir, types.OCIImageIndex, indexOf(d, 100))
			}
			return indexOf(d, 1)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setIndex(t, dir, tc.index())
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			start := time.Now()
			out := filepath.Join(t.TempDir(), "out")
			if err := Bake(ctx, in, out, Options{Agent: agentFor}); err != nil {
				t.Fatal(err)
			}
			if took := time.Since(start); took > 10*time.Second {
				t.Fatalf("took %v", took)
			}
			var baked v1.IndexManifest
			data, _ := os.ReadFile(filepath.Join(out, "index.json"))
			json.Unmarshal(data, &baked)
			if len(baked.Manifests) != len(tc.index().Manifests) {
				t.Fatalf("the baked index names %d, want %d", len(baked.Manifests), len(tc.index().Manifests))
			}
		})
	}
}

// TestWorkBounded: more distinct images, descriptors or levels of index
// than a bake takes are refused with the bound named, and nothing is left.
func TestWorkBounded(t *testing.T) {
	dir, m := layoutWithIndex(t)
	var manifest v1.Manifest
	data, _ := os.ReadFile(filepath.Join(dir, "blobs", "sha256", m.Digest.Hex))
	json.Unmarshal(data, &manifest)
	for _, tc := range []struct {
		name  string
		index func() *v1.IndexManifest
		text  string
	}{
		{"distinct images", func() *v1.IndexManifest {
			idx := indexOf(m, 0)
			for i := range maxImages + 1 {
				manifest.Annotations = map[string]string{"n": fmt.Sprint(i)}
				idx.Manifests = append(idx.Manifests, putBlob(t, dir, types.OCIManifestSchema1, &manifest))
			}
			return idx
		}, "more than 1000 images"},
		{"descriptors in one index", func() *v1.IndexManifest { return indexOf(m, maxDescriptors+1) }, "holds 10001 descriptors"},
		{"descriptors in all", func() *v1.IndexManifest {
			// Distinct indexes of the same manifest, each under 1 MiB.
			var idx v1.IndexManifest
			for i := range maxTotalDescriptors/4500 + 1 {
				sub := indexOf(m, 4500)
				sub.Annotations = map[string]string{"n": fmt.Sprint(i)}
				idx.Manifests = append(idx.Manifests, putBlob(t, dir, types.OCIImageIndex, sub))
			}
			return &idx
		}, "more than 100000 descriptors"},
		{"levels", func() *v1.IndexManifest {
			d := m
			for range maxDepth + 1 {
				d = putBlob(t, dir, types.OCIImageIndex, indexOf(d, 1))
			}
			return indexOf(d, 1)
		}, "levels down"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setIndex(t, dir, tc.index())
			out := filepath.Join(t.TempDir(), "out")
			err := bake(dir, out, Options{})
			if err == nil || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("got %v, want an error saying %q", err, tc.text)
			}
			checkNothingLeft(t, filepath.Dir(out), out)
		})
	}
}

// TestNoCommitAfterSignal: a signal (ctx cancelled) that comes while the
// bake is in the image's metadata, after the input was read, leaves no
// output (issue 25 item 3: it was committed with success).
func TestNoCommitAfterSignal(t *testing.T) {
	// Layers over 1 MiB go into the output as they are read, so that no
	// copy after the signal notices it.
	img := ociImage(t, 2<<20, 1, nil)
	dir := filepath.Join(t.TempDir(), "in")
	writeOCILayout(t, img, dir)
	out := filepath.Join(t.TempDir(), "out")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err := Bake(ctx, dir, out, Options{Agent: func(arch string) (string, error) {
		cancel() // Ctrl-C, as the agent is looked up
		return agents[arch], nil
	}})
	if err == nil || !strings.Contains(err.Error(), "interrupted") {
		t.Fatalf("got %v, want interrupted", err)
	}
	checkNothingLeft(t, filepath.Dir(out), out)

	// A signal as late as the commit, after every copy, is seen too.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	testHookCommit = cancel
	defer func() { testHookCommit = nil }()
	err = Bake(ctx, dir, out, Options{Agent: agentFor})
	if err == nil || !strings.Contains(err.Error(), "interrupted") {
		t.Fatalf("cancelled at the commit: got %v, want interrupted", err)
	}
	checkNothingLeft(t, filepath.Dir(out), out)
}

// TestAbandonWaitsForCommit: the lock Abandon (a second Ctrl-C) takes is
// held across the commit's renames, so that it never removes an output
// halfway into place, and Abandon says whether one was put there: a
// second signal could race the rename, and its message said nothing was
// written when it was.
func TestAbandonWaitsForCommit(t *testing.T) {
	t.Cleanup(func() {
		inProgress.Lock()
		inProgress.committed, inProgress.abandoned = false, false
		inProgress.Unlock()
		testHookCommit = nil
	})
	dir, _ := layoutWithIndex(t)
	out := filepath.Join(t.TempDir(), "out")
	testHookCommit = func() {
		if inProgress.TryLock() {
			inProgress.Unlock()
			t.Error("the commit renames without the lock Abandon takes")
		}
	}
	if err := bake(dir, out, Options{}); err != nil {
		t.Fatal(err)
	}
	if !Abandon() {
		t.Fatal("Abandon after a commit says nothing was written")
	}
	readBaked(t, out, OCILayout)
	// After Abandon, nothing more is committed.
	err := bake(dir, filepath.Join(t.TempDir(), "out2"), Options{})
	if err == nil {
		t.Fatal("a bake committed after Abandon")
	}
}

// TestDescriptorsBoundMemory: metadata that decodes to far more than its
// bytes is refused before it is decoded, and a chain of large indexes is
// walked without keeping each parent decoded (issue 25 item 2: a 15 MiB
// index.json of {} peaked at 2-2.5 GB; 30 nested indexes at 2.3 GB).
func TestDescriptorsBoundMemory(t *testing.T) {
	t.Run("index.json of {}", func(t *testing.T) {
		idx := append([]byte(`{"schemaVersion":2,"manifests":[`), bytes.Repeat([]byte("{},"), 2<<20)...)
		idx = append(idx[:len(idx)-1], "]}"...)
		msg, rss := bakeInChild(t, filepath.Join(t.TempDir(), "out"), "", func(w io.Writer) {
			writeTar(w, map[string][]byte{"oci-layout": []byte(`{"imageLayoutVersion":"1.0.0"}`), "index.json": idx})
		})
		t.Logf("peak %d MiB: %s", rss>>20, msg)
		if rss > 128<<20 {
			t.Fatalf("the bake peaked at %d MiB", rss>>20)
		}
		if !strings.Contains(msg, "JSON values") {
			t.Fatalf("got %q, want a refusal naming the JSON values", msg)
		}
	})
	t.Run("nested indexes", func(t *testing.T) {
		dir, m := layoutWithIndex(t)
		d := m
		ann := map[string]string{}
		for i := range 80000 {
			ann[fmt.Sprint(i)] = ""
		}
		for range maxDepth {
			idx := indexOf(d, 1)
			idx.Annotations = ann
			d = putBlob(t, dir, types.OCIImageIndex, idx)
		}
		setIndex(t, dir, indexOf(d, 1))
		var archive bytes.Buffer
		tarDir(t, dir, &archive)
		msg, rss := bakeInChild(t, filepath.Join(t.TempDir(), "out"), "", func(w io.Writer) { w.Write(archive.Bytes()) })
		t.Logf("peak %d MiB: %s", rss>>20, msg)
		if msg != "" {
			t.Fatal(msg)
		}
		if rss > 85<<20 {
			t.Fatalf("the bake peaked at %d MiB", rss>>20)
		}
	})
}

// writeTar writes files to w as a tar.
func writeTar(w io.Writer, files map[string][]byte) {
	tw := tar.NewWriter(w)
	for name, data := range files {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(len(data)), Mode: 0o644})
		tw.Write(data)
	}
	tw.Close()
}
