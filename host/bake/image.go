package bake

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Annotations bake reads and writes on an OCI index's descriptors.
const (
	refNameAnnotation        = "org.opencontainers.image.ref.name"
	containerdNameAnnotation = "io.containerd.image.name"
	// Attestation manifests (buildx's SBOM and provenance) describe the
	// image they name by digest; after a bake that image is gone, so they
	// are dropped rather than left to vouch for another.
	referenceTypeAnnotation = "vnd.docker.reference.type"
	attestationManifest     = "attestation-manifest"
)

// platformImage is one baked single-platform image, ready to be written.
type platformImage struct {
	config []byte
	layers []layerRef
}

// layerRef is one of an image's layers: its bytes in the input (nil for a
// layer the bake made), and its descriptor.
type layerRef struct {
	blob *blob
	desc v1.Descriptor
}

// bakeDocker reads a docker save tarball's one image.
func (b *baker) bakeDocker() error {
	mf := b.files.lookup("manifest.json")
	var entries []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := b.decode(mf, &entries); err != nil {
		return err
	}
	if err := b.countDescriptors(mf, len(entries)); err != nil {
		return err
	}
	if len(entries) != 1 {
		return fmt.Errorf("%s holds %d images; bake takes one (docker save one image)", b.label, len(entries))
	}
	e := entries[0]
	cfgBlob := b.files.lookup(e.Config)
	if cfgBlob == nil {
		return fmt.Errorf("%s is incomplete: manifest.json names config %s, which is not in it", b.label, e.Config)
	}
	if hex, _, ok := digestFileName(path.Base(e.Config)); ok && hex != cfgBlob.digest.Hex {
		return fmt.Errorf("%s is corrupt: config %s hashes to %s", b.label, e.Config, cfgBlob.digest)
	}
	cfgBytes, err := b.readJSON(cfgBlob)
	if err != nil {
		return err
	}
	cfg, err := parseConfig(cfgBytes)
	if err != nil {
		return fmt.Errorf("%s: %v", b.label, err)
	}
	if len(cfg.rootfs.DiffIDs) != len(e.Layers) {
		return fmt.Errorf("%s is inconsistent: %d layers, but its config lists %d", b.label, len(e.Layers), len(cfg.rootfs.DiffIDs))
	}
	if err := b.countDescriptors(mf, len(e.Layers)); err != nil {
		return err
	}
	var layers []layerRef
	for i, name := range e.Layers {
		if err := b.ctx.Err(); err != nil {
			return err
		}
		lb := b.files.lookup(name)
		if lb == nil {
			return fmt.Errorf("%s is incomplete: manifest.json names layer %s, which is not in it", b.label, name)
		}
		// A layer's diff id is the digest of its uncompressed tar, and
		// the only digest a docker archive gives for it.
		got, err := b.diffID(lb)
		if err != nil {
			return err
		}
		if got != cfg.rootfs.DiffIDs[i] {
			return fmt.Errorf("%s is corrupt: layer %s hashes to %s, its config says %s", b.label, name, got, cfg.rootfs.DiffIDs[i])
		}
		layers = append(layers, layerRef{blob: lb, desc: v1.Descriptor{
			MediaType: layerType(lb.compression), Size: lb.size, Digest: lb.digest,
		}})
	}
	img, err := b.bakeImage(cfg, layers)
	if err != nil {
		return err
	}
	var ann map[string]string
	if len(e.RepoTags) > 0 {
		// podman writes a docker image's full name as the OCI ref name.
		ann = map[string]string{refNameAnnotation: e.RepoTags[0]}
	}
	return b.finish([]*platformImage{img}, e.RepoTags, []v1.Descriptor{{Annotations: ann}})
}

// dockerTag is the docker tag an OCI descriptor's annotations name: the
// image's full name, as containerd records it or podman writes it as the
// ref name. A ref name that is only a tag ("1.0") names no repository.
func dockerTag(ann map[string]string) string {
	if n := ann[containerdNameAnnotation]; n != "" {
		return n
	}
	ref := ann[refNameAnnotation]
	if i := strings.LastIndexByte(ref, ':'); i > 0 && !strings.Contains(ref[i:], "/") {
		return ref
	}
	return ""
}

func supported(os, arch string) bool { return os == "linux" && machines[arch] != 0 }

func unsupported(label, platform string) error {
	return fmt.Errorf("%s: the image is for %s; corkd is built for linux/amd64 and linux/arm64", label, platform)
}

// blobFor returns the input's blob that d names, checking its size;
// where names d for messages ("index.json, manifest 2").
func (b *baker) blobFor(d v1.Descriptor, where string) (*blob, error) {
	if d.Digest == (v1.Hash{}) {
		return nil, fmt.Errorf("%s: %s has no digest", b.label, where)
	}
	bl := b.files.byDigest(d.Digest)
	if bl == nil {
		return nil, fmt.Errorf("%s is incomplete: %s names blob %s (%s), which is not in it", b.label, where, d.Digest, d.MediaType)
	}
	if d.Size != bl.size {
		return nil, fmt.Errorf("%s is corrupt: blob %s has %d bytes, %s says %d", b.label, d.Digest, bl.size, where, d.Size)
	}
	return bl, nil
}

// diffID returns the digest of a layer's uncompressed bytes: its digest
// for an uncompressed one; for a compressed one, the hash taken as it
// was read, or else taken now from where its bytes went.
func (b *baker) diffID(lb *blob) (v1.Hash, error) {
	switch lb.compression {
	case "":
		return lb.digest, nil
	case "xz", "bzip2":
		// Checked as they are, such a layer's bytes would pass for its
		// uncompressed ones: no image tool writes them.
		return v1.Hash{}, fmt.Errorf("%s: layer %s is %s-compressed; cork bake takes docker layers plain, gzip'd or zstd-compressed", b.label, lb.name, lb.compression)
	}
	if lb.diffID == (v1.Hash{}) && lb.diffErr == nil {
		r, err := b.reopen(lb)
		if err != nil {
			return v1.Hash{}, err
		}
		lb.diffID, lb.diffErr = hashUncompressed(lb.compression, ctxReader{b.ctx, r}, lb.size)
		r.Close()
	}
	if lb.diffErr != nil {
		if err := b.ctx.Err(); err != nil {
			return v1.Hash{}, err
		}
		return v1.Hash{}, fmt.Errorf("%s is corrupt: %s is %v", b.label, lb.name, lb.diffErr)
	}
	return lb.diffID, nil
}

// reopen reads a blob's bytes again, wherever they went.
func (b *baker) reopen(lb *blob) (io.ReadCloser, error) {
	if lb.written == "" {
		return lb.open()
	}
	return b.out.reopen(lb.written, lb.size)
}

// ociLayerType is the OCI media type of a layer of media type t.
func ociLayerType(t types.MediaType) types.MediaType {
	switch t {
	case types.DockerLayer:
		return types.OCILayer
	case types.DockerUncompressedLayer:
		return types.OCIUncompressedLayer
	case types.DockerForeignLayer:
		return types.OCIRestrictedLayer
	}
	return t
}

// layerType is the OCI media type of a layer compressed so.
func layerType(compression string) types.MediaType {
	switch compression {
	case "gzip":
		return types.OCILayer
	case "zstd":
		return types.OCILayerZStd
	}
	return types.OCIUncompressedLayer
}

// bakeImage adds corkd to one image: its layer after the others (in place
// of the corkd layer of an earlier bake), and the config that records it.
func (b *baker) bakeImage(cfg *imageConfig, layers []layerRef) (*platformImage, error) {
	osName, arch, variant := cfg.platform()
	if !supported(osName, arch) {
		p := osName + "/" + arch
		if variant != "" {
			p += "/" + variant
		}
		return nil, unsupported(b.label, p)
	}
	agent, err := b.agentFor(arch)
	if err != nil {
		return nil, err
	}
	if old, ok := cfg.bakedVersion(); ok && len(layers) > 0 {
		cfg.dropLastLayer()
		layers = layers[:len(layers)-1]
		b.note("replacing corkd %s with %s in the linux/%s image", old, agent.version, arch)
	}
	cfg.addAgent(agent.digest, agent.version, b.opts.Path, b.created)
	cb, err := cfg.marshal()
	if err != nil {
		return nil, err
	}
	layers = append(layers, layerRef{desc: v1.Descriptor{
		MediaType: types.OCIUncompressedLayer, Size: int64(len(agent.layer)), Digest: agent.digest,
	}})
	return &platformImage{config: cb, layers: layers}, nil
}

// writeImage writes an image's config, layers and OCI manifest, and
// returns the manifest's descriptor.
func (b *baker) writeImage(img *platformImage, annotations map[string]string) (v1.Descriptor, error) {
	cfgDesc, err := b.writeBlob(img.config)
	if err != nil {
		return v1.Descriptor{}, err
	}
	m := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1, Annotations: annotations,
		Config: v1.Descriptor{MediaType: types.OCIConfigJSON, Size: cfgDesc.Size, Digest: cfgDesc.Digest}}
	for _, l := range img.layers {
		if err := b.ctx.Err(); err != nil {
			return v1.Descriptor{}, err
		}
		if _, err := b.writeLayer(l); err != nil {
			return v1.Descriptor{}, err
		}
		m.Layers = append(m.Layers, l.desc)
	}
	d, _, err := b.writeJSON(v1.Descriptor{}, m.MediaType, &m)
	return d, err
}

// writeLayer puts a layer in the output, unless it is there already, and
// returns its name there.
func (b *baker) writeLayer(l layerRef) (string, error) {
	if l.blob == nil {
		if l.desc.Digest == (v1.Hash{}) || len(l.desc.URLs) > 0 {
			return "", nil // a foreign layer
		}
		for _, a := range b.agents {
			if a.digest == l.desc.Digest {
				name := "blobs/sha256/" + a.digest.Hex
				if b.out.sink.has(name) {
					return name, nil
				}
				return name, put(b.out.sink, name, a.layer)
			}
		}
		return "", fmt.Errorf("layer %s has no bytes", l.desc.Digest)
	}
	want := "blobs/sha256/" + l.blob.digest.Hex
	if l.blob.written != "" {
		if b.out.format != Docker && l.blob.written != want {
			return "", fmt.Errorf("%s: layer %s is not named by its digest (%s); cork bake cannot stream it into an OCI layout", b.label, l.blob.name, l.blob.digest)
		}
		return l.blob.written, nil
	}
	if b.out.sink.has(want) {
		return want, nil
	}
	r, err := l.blob.open()
	if err != nil {
		return "", err
	}
	defer r.Close()
	w, err := b.out.sink.create(want, l.blob.size)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(io.MultiWriter(w, b.progress), ctxReader{b.ctx, r}); err != nil {
		w.Close()
		return "", err
	}
	return want, w.Close()
}

// writeBlob puts data in the output by its digest.
func (b *baker) writeBlob(data []byte) (v1.Descriptor, error) {
	d := hashOf(data)
	name := "blobs/sha256/" + d.Hex
	if !b.out.sink.has(name) {
		if err := put(b.out.sink, name, data); err != nil {
			return v1.Descriptor{}, err
		}
	}
	return v1.Descriptor{Digest: d, Size: int64(len(data))}, nil
}

// writeJSON writes v as a blob and returns d describing it instead.
func (b *baker) writeJSON(d v1.Descriptor, mt types.MediaType, v any) (v1.Descriptor, bool, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return v1.Descriptor{}, false, err
	}
	nd, err := b.writeBlob(data)
	if err != nil {
		return v1.Descriptor{}, false, err
	}
	d.MediaType, d.Digest, d.Size = mt, nd.Digest, nd.Size
	return d, true, nil
}

// finish writes what names the images: index.json and oci-layout for an
// OCI layout, manifest.json for a docker tarball.
func (b *baker) finish(images []*platformImage, tags []string, descs []v1.Descriptor) error {
	if b.out.format == Docker {
		switch {
		case len(images) == 0:
			return fmt.Errorf("%s names no image", b.label)
		case len(images) > 1:
			return b.tooManyForDocker()
		}
		img := images[0]
		cfg, err := b.writeBlob(img.config)
		if err != nil {
			return err
		}
		entry := struct {
			Config   string
			RepoTags []string
			Layers   []string
		}{Config: "blobs/sha256/" + cfg.Digest.Hex, RepoTags: tags}
		for _, l := range img.layers {
			if err := b.ctx.Err(); err != nil {
				return err
			}
			name, err := b.writeLayer(l)
			if err != nil {
				return err
			}
			if name == "" {
				return errors.New("a docker save tarball cannot hold a foreign layer")
			}
			entry.Layers = append(entry.Layers, name)
		}
		data, err := json.Marshal([]any{entry})
		if err != nil {
			return err
		}
		return put(b.out.sink, "manifest.json", data)
	}
	var index v1.IndexManifest
	index.SchemaVersion = 2
	index.MediaType = types.OCIImageIndex
	for _, d := range descs {
		if d.Digest == (v1.Hash{}) { // from a docker tarball: its one image
			if len(images) != 1 {
				return fmt.Errorf("%s: %d images for one descriptor", b.label, len(images))
			}
			m, err := b.writeImage(images[0], nil)
			if err != nil {
				return err
			}
			m.Annotations = d.Annotations
			d = m
		}
		index.Manifests = append(index.Manifests, d)
	}
	data, err := json.Marshal(&index)
	if err != nil {
		return err
	}
	if err := put(b.out.sink, "oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	return put(b.out.sink, "index.json", data)
}

// decode reads a JSON file of the input, refusing one whose decoding
// would hold far more than its bytes: a 15 MiB file of "{}," decodes to
// millions of descriptors.
func (b *baker) decode(bl *blob, v any) error {
	if bl == nil {
		return fmt.Errorf("%s is incomplete: a file it names is not in it", b.label)
	}
	data, err := b.readJSON(bl)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s: %s: %v", b.label, bl.name, err)
	}
	return nil
}

// readJSON returns a JSON metadata file's bytes (an index, a manifest, a
// config), refusing one whose decoding would hold far more than its bytes.
func (b *baker) readJSON(bl *blob) ([]byte, error) {
	data, err := b.read(bl)
	if err != nil {
		return nil, err
	}
	if n := jsonValues(data); n > maxJSONValues {
		return nil, fmt.Errorf("%s: %s holds %d JSON values; image metadata holds far fewer (cork bake takes at most %d)", b.label, bl.name, n, maxJSONValues)
	}
	return data, nil
}

// jsonValues counts the values in a JSON text, roughly: each object,
// array and comma outside strings. What decoding it allocates grows with
// this count.
func jsonValues(data []byte) int {
	n := 0
	inString, escaped := false, false
	for _, c := range data {
		switch {
		case escaped:
			escaped = false
		case inString:
			escaped = c == '\\'
			inString = c != '"'
		case c == '"':
			inString = true
		case c == '{' || c == '[' || c == ',':
			n++
		}
	}
	return n
}

// read returns a metadata file's bytes, from memory or, for one that went
// into the output as it was read (once small files filled what bake
// holds), from there.
func (b *baker) read(bl *blob) ([]byte, error) {
	if bl.size > maxMetadata {
		return nil, fmt.Errorf("%s: %s has %d bytes, too many for image metadata", b.label, bl.name, bl.size)
	}
	r, err := b.reopen(bl)
	if err != nil {
		return nil, fmt.Errorf("%s: %v; cork bake cannot read it as image metadata", b.label, err)
	}
	defer r.Close()
	return io.ReadAll(io.LimitReader(r, maxMetadata))
}
