package bake

import (
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Bounds on the work an image's metadata can ask for. An index may name a
// manifest any number of times, and indexes may name indexes: without
// them a few small files fan out to billions of bakes.
const (
	maxMetadata         = 16 << 20 // bytes in one manifest, index or config
	maxJSONValues       = 1 << 18  // values in one of them
	maxDescriptors      = 10000    // descriptors in one index or manifest
	maxTotalDescriptors = 100000   // descriptors in all the files a bake decodes
	maxImages           = 1000     // distinct images baked
	maxDepth            = 8        // indexes within indexes
)

// ref is what a walk of an index keeps of one of its descriptors, so that
// the decoded index need not stay alive while its children are baked.
type ref struct {
	mediaType types.MediaType
	digest    v1.Hash
	size      int64
	drop      bool   // an attestation, left out of the baked index
	where     string // which descriptor it is, for messages
}

// bakedRef is what a manifest or index became.
type bakedRef struct {
	mediaType types.MediaType
	digest    v1.Hash
	size      int64
}

func refKey(mt types.MediaType, d v1.Hash) string { return string(mt) + " " + d.String() }

// bakeOCI reads an OCI layout's index and bakes every image it names.
func (b *baker) bakeOCI() error {
	root := b.files.lookup("index.json")
	if root == nil {
		return fmt.Errorf("%s is incomplete: it has an oci-layout file but no index.json", b.label)
	}
	idx, err := b.bakeIndex(root, 0)
	if err != nil {
		return err
	}
	var tags []string
	for _, d := range idx.Manifests {
		if tag := dockerTag(d.Annotations); tag != "" {
			tags = append(tags, tag)
		}
	}
	if len(idx.Manifests) == 0 {
		return fmt.Errorf("%s names no image", b.label)
	}
	return b.finish(b.images, tags, idx.Manifests)
}

// bakeIndex bakes every image an index names, each distinct one once, and
// returns the index with the baked descriptors in place of the old ones
// (attestations left out).
func (b *baker) bakeIndex(bl *blob, depth int) (*v1.IndexManifest, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("%s: %s is an index %d levels down; cork bake follows at most %d", b.label, bl.name, depth, maxDepth)
	}
	refs, err := b.indexRefs(bl)
	if err != nil {
		return nil, err
	}
	for _, r := range refs {
		if err := b.ctx.Err(); err != nil {
			return nil, err
		}
		if r.drop {
			b.dropped++
			continue
		}
		if err := b.bakeRef(r, depth); err != nil {
			return nil, err
		}
	}
	// Decoded again, now that its children are baked, for the fields a
	// ref does not keep (platform, annotations).
	var idx v1.IndexManifest
	if err := b.decode(bl, &idx); err != nil {
		return nil, err
	}
	kept := idx.Manifests[:0]
	for _, d := range idx.Manifests {
		if d.Annotations[referenceTypeAnnotation] == attestationManifest {
			continue
		}
		nd := b.baked[refKey(d.MediaType, d.Digest)]
		d.MediaType, d.Digest, d.Size = nd.mediaType, nd.digest, nd.size
		kept = append(kept, d)
	}
	idx.Manifests = kept
	return &idx, nil
}

// indexRefs decodes an index and keeps what its walk needs of each
// descriptor, refusing, before anything is baked, a platform cork has no
// agent for.
func (b *baker) indexRefs(bl *blob) ([]ref, error) {
	var idx v1.IndexManifest
	if err := b.decode(bl, &idx); err != nil {
		return nil, err
	}
	if err := b.countDescriptors(bl, len(idx.Manifests)); err != nil {
		return nil, err
	}
	refs := make([]ref, 0, len(idx.Manifests))
	for i, c := range idx.Manifests {
		drop := c.Annotations[referenceTypeAnnotation] == attestationManifest
		if c.Platform != nil && !drop && !supported(c.Platform.OS, c.Platform.Architecture) {
			return nil, unsupported(b.label, c.Platform.String())
		}
		refs = append(refs, ref{mediaType: c.MediaType, digest: c.Digest, size: c.Size, drop: drop,
			where: fmt.Sprintf("%s, manifest %d of %d", bl.name, i+1, len(idx.Manifests))})
	}
	return refs, nil
}

// countDescriptors admits the descriptors of one more decoded file.
func (b *baker) countDescriptors(bl *blob, n int) error {
	if n > maxDescriptors {
		return fmt.Errorf("%s: %s holds %d descriptors; cork bake takes at most %d in one index or manifest", b.label, bl.name, n, maxDescriptors)
	}
	b.descriptors += n
	if b.descriptors > maxTotalDescriptors {
		return fmt.Errorf("%s: its indexes and manifests hold more than %d descriptors in all, more than cork bake takes", b.label, maxTotalDescriptors)
	}
	return nil
}

// bakeRef bakes the index or image r names, unless it was baked already,
// and records what it became.
func (b *baker) bakeRef(r ref, depth int) error {
	key := refKey(r.mediaType, r.digest)
	bl, err := b.blobFor(v1.Descriptor{MediaType: r.mediaType, Digest: r.digest, Size: r.size}, r.where)
	if err != nil {
		return err
	}
	if _, ok := b.baked[key]; ok {
		return nil
	}
	var nd bakedRef
	switch r.mediaType {
	case types.OCIImageIndex, types.DockerManifestList:
		nd, err = b.bakeChildIndex(bl, depth+1)
	case types.OCIManifestSchema1, types.DockerManifestSchema2:
		nd, err = b.bakeManifest(bl)
	case "":
		err = fmt.Errorf("%s: %s has no mediaType", b.label, r.where)
	default:
		err = fmt.Errorf("%s: %s is a %s, which bake does not know", b.label, r.digest, r.mediaType)
	}
	if err != nil {
		return err
	}
	if b.out.format == Docker { // docker tarballs hold no manifests or indexes
		nd = bakedRef{mediaType: r.mediaType, digest: r.digest, size: r.size}
	}
	b.baked[key] = nd
	return nil
}

// bakeChildIndex bakes an index an index names, and writes the baked one.
func (b *baker) bakeChildIndex(bl *blob, depth int) (bakedRef, error) {
	idx, err := b.bakeIndex(bl, depth)
	if err != nil || b.out.format == Docker {
		return bakedRef{}, err
	}
	idx.MediaType = types.OCIImageIndex
	d, _, err := b.writeJSON(v1.Descriptor{}, idx.MediaType, idx)
	return bakedRef{mediaType: d.MediaType, digest: d.Digest, size: d.Size}, err
}

// bakeManifest bakes one image, and writes it unless the output is a
// docker tarball, which gets its one image at the end.
func (b *baker) bakeManifest(bl *blob) (bakedRef, error) {
	if b.imagesBaked++; b.imagesBaked > maxImages {
		return bakedRef{}, fmt.Errorf("%s names more than %d images, more than cork bake takes", b.label, maxImages)
	}
	var m v1.Manifest
	if err := b.decode(bl, &m); err != nil {
		return bakedRef{}, err
	}
	if err := b.countDescriptors(bl, len(m.Layers)); err != nil {
		return bakedRef{}, err
	}
	cfgBlob, err := b.blobFor(m.Config, bl.name+", config")
	if err != nil {
		return bakedRef{}, err
	}
	cfgBytes, err := b.readJSON(cfgBlob)
	if err != nil {
		return bakedRef{}, err
	}
	cfg, err := parseConfig(cfgBytes)
	if err != nil {
		return bakedRef{}, fmt.Errorf("%s: %s: %v", b.label, m.Config.Digest, err)
	}
	var layers []layerRef
	for i, l := range m.Layers {
		var lb *blob
		if len(l.URLs) == 0 { // a foreign layer is fetched from its URLs, not carried
			if lb, err = b.blobFor(l, fmt.Sprintf("%s, layer %d of %d", bl.name, i+1, len(m.Layers))); err != nil {
				return bakedRef{}, err
			}
		}
		l.MediaType = ociLayerType(l.MediaType)
		layers = append(layers, layerRef{blob: lb, desc: l})
	}
	img, err := b.bakeImage(cfg, layers)
	if err != nil {
		return bakedRef{}, err
	}
	if b.out.format == Docker {
		// Only one image fits; fail at the second, not after baking all.
		if len(b.images) > 0 {
			return bakedRef{}, b.tooManyForDocker()
		}
		b.images = append(b.images, img)
		return bakedRef{}, nil
	}
	nm, err := b.writeImage(img, m.Annotations)
	return bakedRef{mediaType: nm.MediaType, digest: nm.Digest, size: nm.Size}, err
}

func (b *baker) tooManyForDocker() error {
	return fmt.Errorf("%s holds images for more than one platform; a docker save tarball holds one: use --format oci or oci-archive", b.label)
}
