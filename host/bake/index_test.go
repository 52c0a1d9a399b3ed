package bake

import (
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// multiPlatform writes an OCI layout holding an index of the images, each
// under its platform, and an attestation manifest as buildx adds one.
func multiPlatform(t *testing.T, dir string, imgs map[string]v1.Image) {
	t.Helper()
	var adds []mutate.IndexAddendum
	for arch, img := range imgs {
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	att, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	att = mutate.MediaType(att, types.OCIManifestSchema1)
	adds = append(adds, mutate.IndexAddendum{Add: att, Descriptor: v1.Descriptor{
		Platform:    &v1.Platform{OS: "unknown", Architecture: "unknown"},
		Annotations: map[string]string{referenceTypeAnnotation: attestationManifest},
	}})
	idx := mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{refNameAnnotation: "1.0"})); err != nil {
		t.Fatal(err)
	}
}

// TestBakeMultiPlatformIndex: each platform's image gets its own corkd,
// the index is rewritten with the new manifests, attestations are dropped.
func TestBakeMultiPlatformIndex(t *testing.T) {
	dir := t.TempDir()
	bases := map[string]v1.Image{"amd64": baseImage(t, "amd64", true), "arm64": baseImage(t, "arm64", true)}
	in := filepath.Join(dir, "in")
	multiPlatform(t, in, bases)
	for _, format := range []Format{OCILayout, OCIArchive} {
		t.Run(string(format), func(t *testing.T) {
			out := filepath.Join(dir, "out-"+string(format))
			if err := bake(in, out, Options{Format: format}); err != nil {
				t.Fatal(err)
			}
			if format == OCIArchive {
				layoutDir := filepath.Join(t.TempDir(), "layout")
				untarTo(t, out, layoutDir)
				out = layoutDir
			}
			top, err := layout.ImageIndexFromPath(out)
			if err != nil {
				t.Fatal(err)
			}
			tm, _ := top.IndexManifest()
			if len(tm.Manifests) != 1 || tm.Manifests[0].MediaType != types.OCIImageIndex || tm.Manifests[0].Annotations[refNameAnnotation] != "1.0" {
				t.Fatalf("index.json: %+v", tm.Manifests)
			}
			idx, err := top.ImageIndex(tm.Manifests[0].Digest)
			if err != nil {
				t.Fatal(err)
			}
			im, _ := idx.IndexManifest()
			if len(im.Manifests) != 2 {
				t.Fatalf("%d manifests in the baked index, want the 2 platforms (attestation dropped): %+v", len(im.Manifests), im.Manifests)
			}
			for _, d := range im.Manifests {
				img, err := idx.Image(d.Digest)
				if err != nil {
					t.Fatal(err)
				}
				arch := d.Platform.Architecture
				checkBaked(t, bases[arch], &baked{img: img, mediaType: d.MediaType}, arch)
			}
		})
	}
	// A docker tarball holds one platform.
	err := bake(in, filepath.Join(dir, "out.tar"), Options{Format: Docker})
	if err == nil || !strings.Contains(err.Error(), "a docker save tarball holds one") {
		t.Fatalf("multi-platform to docker: %v", err)
	}
	checkNothingLeft(t, dir, filepath.Join(dir, "out.tar"))
}

// TestBakeIndexRefusesUnknownPlatform: a platform cork has no agent for is
// refused by name, and nothing is written.
func TestBakeIndexRefusesUnknownPlatform(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in")
	multiPlatform(t, in, map[string]v1.Image{"amd64": baseImage(t, "amd64", true), "s390x": baseImage(t, "amd64", true)})
	out := filepath.Join(dir, "out")
	err := bake(in, out, Options{})
	if err == nil || !strings.Contains(err.Error(), "linux/s390x") {
		t.Fatalf("got %v, want a refusal naming linux/s390x", err)
	}
	checkNothingLeft(t, dir, out)
}
