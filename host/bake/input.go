package bake

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// An input is read once, front to back, whatever its format: a tar's
// entries come in no fixed order (docker save writes manifest.json last),
// and stdin cannot be read twice. Small files (manifests, configs) are held
// in memory; large ones (layers) go straight into the output when their name
// there is already known, and to a spool file otherwise. Every file is
// hashed as it passes, so that what the image's metadata claims is checked
// against what was read, without a second pass.

// blob is one file of the input, by its name there.
type blob struct {
	name   string
	size   int64
	digest v1.Hash // sha256 of its bytes, as read
	// compression is "gzip" or "zstd" when the bytes are a compressed
	// layer, "" otherwise; diffID is the sha256 of a compressed blob's
	// uncompressed bytes, or diffErr why they are not valid, computed as
	// it passed when its name does not give its digest or its bytes go to
	// stdout, and otherwise only if a docker archive's config needs it.
	compression string
	diffID      v1.Hash
	diffErr     error

	data    []byte // a small file, held in memory
	spool   string // a large file the output could not take yet
	written string // a large file already in the output, by its name there
}

// open returns the blob's bytes, unless they went straight into the output.
func (b *blob) open() (io.ReadCloser, error) {
	switch {
	case b.spool != "":
		return os.Open(b.spool)
	case b.written != "":
		return nil, fmt.Errorf("%s went into the output as it was read", b.name)
	}
	return io.NopCloser(bytes.NewReader(b.data)), nil
}

// Limits on what an input holds in memory.
const (
	smallFile   = 1 << 20  // files up to this size are held in memory
	memoryLimit = 64 << 20 // and no more than this in all, names included
	maxName     = 4096     // bytes in a file name or link target
	entryCost   = 384      // what one file's record costs beside its name: about 310 bytes live, and its map's growth
)

// inputFiles is everything read from an input.
type inputFiles struct {
	blobs    map[string]*blob
	links    map[string]string // symlinks, name -> target (docker save's <id>/layer.tar)
	declared map[string]int64  // blob sizes, by hex digest, that metadata read so far gives
	held     int64             // bytes held in memory
}

// lookup returns the blob at name, following symlinks.
func (in *inputFiles) lookup(name string) *blob {
	name = cleanName(name)
	for range 8 {
		if b, ok := in.blobs[name]; ok {
			return b
		}
		target, ok := in.links[name]
		if !ok {
			return nil
		}
		if !strings.HasPrefix(target, "/") {
			target = path.Join(path.Dir(name), target)
		}
		name = cleanName(target)
	}
	return nil
}

// byDigest returns the blob an OCI layout holds for d.
func (in *inputFiles) byDigest(d v1.Hash) *blob {
	return in.blobs["blobs/"+d.Algorithm+"/"+d.Hex]
}

func cleanName(name string) string {
	return strings.TrimPrefix(path.Clean("/"+strings.TrimPrefix(name, "./")), "/")
}

// reader reads an input's files, handing large ones to the output as it
// goes.
type reader struct {
	ctx      context.Context
	label    string // how messages name the input: its path, or "stdin"
	files    *inputFiles
	out      *output
	progress *progress
	spoolIn  func() (string, error) // the directory for spool files, made on first use
	buf      *bufio.Reader          // reads each file in turn
	copyBuf  [32 << 10]byte
}

// blobHex returns the digest in a name an OCI layout gives a blob,
// blobs/sha256/HEX.
func blobHex(name string) (string, bool) {
	hex, ok := strings.CutPrefix(name, "blobs/sha256/")
	return hex, ok && isSHA256Hex(hex)
}

// isSHA256Hex reports whether s is a sha256 digest in lowercase hex.
func isSHA256Hex(s string) bool {
	return len(s) == 64 && strings.Trim(s, "0123456789abcdef") == ""
}

// digestFileName splits a file named by its digest, as podman's and
// skopeo's docker archives name layers and configs, HEX.tar or HEX.json,
// into the digest and the extension.
func digestFileName(name string) (hex, ext string, ok bool) {
	hex, ext, _ = strings.Cut(name, ".")
	return hex, ext, isSHA256Hex(hex) && (ext == "tar" || ext == "json")
}

// add reads one file of size bytes from r.
func (rd *reader) add(name string, size int64, r io.Reader) error {
	name = cleanName(name)
	if name == "" || name == "." {
		return nil
	}
	if err := rd.retain(name, ""); err != nil {
		return err
	}
	if hex, ok := blobHex(name); ok {
		if want, ok := rd.files.declared[hex]; ok && want != size {
			return fmt.Errorf("%s is corrupt: blob %s has %d bytes, its descriptor says %d", rd.label, name, size, want)
		}
	}
	b := &blob{name: name, size: size}
	dst, finish, streamed, err := rd.destination(b)
	if err != nil {
		return err
	}
	if err := rd.copy(b, dst, r, streamed && rd.mayBeDockerLayer()); err != nil {
		if err == io.ErrUnexpectedEOF {
			return fmt.Errorf("%s is truncated: %s ends after %d of its %d bytes", rd.label, name, b.size, size)
		}
		return err
	}
	if b.size != size {
		return fmt.Errorf("%s: %s changed while it was read: %d bytes, then %d", rd.label, name, size, b.size)
	}
	if err := finish(); err != nil {
		return err
	}
	rd.files.blobs[name] = b
	if err := rd.checkNamedDigest(b); err != nil {
		return err
	}
	if _, named := blobHex(name); b.data != nil && (named || name == "index.json") {
		rd.declare(b.data)
	}
	return nil
}

// destination is where a file's bytes go as they are read: memory for a
// small file while there is room, the output when its name there is
// known (streamed), a spool file otherwise. finish records where they
// went once they are all there.
func (rd *reader) destination(b *blob) (dst io.Writer, finish func() error, streamed bool, err error) {
	name, size := b.name, b.size
	if size <= smallFile && rd.files.held+size <= memoryLimit {
		buf := bytes.NewBuffer(make([]byte, 0, size))
		return buf, func() error { b.data = buf.Bytes(); rd.files.held += size; return nil }, false, nil
	}
	if outName, ok := rd.out.streamName(name); ok {
		if rd.out.sink.has(outName) { // the same blob under two names: checkNamedDigest compares them
			return io.Discard, func() error { b.written = outName; return nil }, false, nil
		}
		w, err := rd.out.sink.create(outName, size)
		if err != nil {
			return nil, nil, false, err
		}
		return w, func() error { b.written = outName; return w.Close() }, true, nil
	}
	if err := rd.out.disk.take(size, name); err != nil {
		return nil, nil, false, fmt.Errorf("%s: %w", rd.label, err)
	}
	dir, err := rd.spoolIn()
	if err != nil {
		return nil, nil, false, err
	}
	f, err := os.CreateTemp(dir, "spool-")
	if err != nil {
		return nil, nil, false, err
	}
	return f, func() error { b.spool = f.Name(); return f.Close() }, false, nil
}

// checkNamedDigest refuses a file whose name gives a digest its bytes do
// not have: blobs/sha256/HEX, HEX.tar, HEX.json, and whatever went into
// the output as blobs/sha256/HEX. Bytes that reach the output under a
// digest's name must have that digest, or a stray file read first could
// stand in for a checked blob or for the corkd layer.
func (rd *reader) checkNamedDigest(b *blob) error {
	claimed, named := blobHex(b.name)
	if !named {
		claimed, _, named = digestFileName(b.name)
	}
	if named && claimed != b.digest.Hex {
		return fmt.Errorf("%s is corrupt: %s hashes to %s", rd.label, b.name, b.digest)
	}
	if hex, ok := blobHex(b.written); ok && hex != b.digest.Hex {
		return fmt.Errorf("%s is corrupt: %s, another copy of %s, hashes to %s", rd.label, b.name, b.written, b.digest)
	}
	return nil
}

// declare records the sizes a manifest or index gives the blobs it names,
// so that a blob that comes after it in the archive is refused before a
// byte of it is copied when its size is another.
func (rd *reader) declare(data []byte) {
	if len(data) == 0 || data[0] != '{' || jsonValues(data) > maxJSONValues {
		return
	}
	type sized struct {
		Digest v1.Hash
		Size   int64
	}
	var m struct {
		Config            *sized
		Layers, Manifests []sized
	}
	if json.Unmarshal(data, &m) != nil {
		return
	}
	if m.Config != nil {
		m.Layers = append(m.Layers, *m.Config)
	}
	for _, d := range append(m.Layers, m.Manifests...) {
		if len(rd.files.declared) >= maxTotalDescriptors {
			return
		}
		if _, ok := rd.files.declared[d.Digest.Hex]; !ok && d.Digest.Algorithm == "sha256" {
			rd.files.declared[d.Digest.Hex] = d.Size
		}
	}
}

// link records a symlink or hard link to target.
func (rd *reader) link(name, target string) error {
	name = cleanName(name)
	if err := rd.retain(name, target); err != nil {
		return err
	}
	rd.files.links[name] = target
	return nil
}

// retain admits one more name (and a link's target) to what the input
// holds in memory: each is counted against memoryLimit, so that an archive
// of many long names cannot hold more than its files could. An entry that
// comes twice is refused: which copy the image meant is anyone's guess.
func (rd *reader) retain(name, target string) error {
	if len(name) > maxName || len(target) > maxName {
		return fmt.Errorf("%s: an entry of %d bytes of name and %d of link target (%s); image archives use names of at most %d bytes",
			rd.label, len(name), len(target), shortName(name), maxName)
	}
	_, isBlob := rd.files.blobs[name]
	_, isLink := rd.files.links[name]
	if isBlob || isLink {
		return fmt.Errorf("%s holds %s twice; an image archive names each file once", rd.label, shortName(name))
	}
	cost := int64(entryCost + len(name) + len(target))
	if rd.files.held+cost > memoryLimit {
		return fmt.Errorf("%s: more files and names than cork bake holds (%d MiB of names and small files)", rd.label, memoryLimit>>20)
	}
	rd.files.held += cost
	return nil
}

// shortName is name cut to a length that fits in a message.
func shortName(name string) string {
	if len(name) > 100 {
		return fmt.Sprintf("%s... (%d bytes)", name[:100], len(name))
	}
	return name
}

// copy moves r's bytes to dst, hashing them and noting a compressed
// layer. With layer, it hashes a compressed file's uncompressed bytes too:
// for a docker layer whose bytes cannot be read again (they went to
// stdout), as its config names it by that digest. Any other file is
// uncompressed later, only if the image names it as a layer: doing it for
// every file that looks compressed cost seconds for files no image names.
func (rd *reader) copy(b *blob, dst io.Writer, r io.Reader, layer bool) error {
	h := sha256.New()
	// One buffer serves every file: an archive of many tiny entries must
	// not cost a buffer each.
	if rd.buf == nil {
		rd.buf = bufio.NewReaderSize(r, 1<<20)
	}
	br := rd.buf
	br.Reset(r)
	defer br.Reset(nil)
	head, _ := br.Peek(10)
	var unz *uncompressedHasher
	b.compression = compressionOf(head)
	if (b.compression == "gzip" || b.compression == "zstd") && layer && rd.out.dest == "" {
		unz = newUncompressedHasher(b.compression, b.size)
		dst = io.MultiWriter(dst, unz)
	}
	n, err := io.CopyBuffer(io.MultiWriter(dst, h, rd.progress), ctxReader{rd.ctx, br}, rd.copyBuf[:])
	b.size = n
	if unz != nil {
		b.diffID, b.diffErr = unz.finish()
	}
	if err != nil {
		return err
	}
	b.digest = v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", h.Sum(nil))}
	return nil
}

// mayBeDockerLayer reports whether a file read now can be a docker
// archive's layer, whose config names it by its uncompressed digest: not
// once the input shows it is an OCI image, whose layers are checked by
// their own digests.
func (rd *reader) mayBeDockerLayer() bool {
	return rd.files.lookup("manifest.json") != nil || rd.files.lookup("oci-layout") == nil
}

var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
	xzMagic   = []byte{0xfd, '7', 'z', 'X', 'Z', 0}
	bz2Magic  = []byte("BZh")
	// A bzip2 stream's first block starts with the digits of pi, after
	// its header "BZh" and a block size digit.
	bz2Block = []byte{0x31, 0x41, 0x59, 0x26, 0x53, 0x59}
)

// compressionOf names the compression a layer's first bytes show: gzip,
// zstd, xz, bzip2 or "" for none.
func compressionOf(head []byte) string {
	switch {
	case bytes.HasPrefix(head, gzipMagic):
		return "gzip"
	case bytes.HasPrefix(head, zstdMagic):
		return "zstd"
	case bytes.HasPrefix(head, xzMagic):
		return "xz"
	case len(head) >= 10 && bytes.HasPrefix(head, bz2Magic) && head[3] >= '1' && head[3] <= '9' && bytes.Equal(head[4:10], bz2Block):
		return "bzip2"
	}
	return ""
}

// maxExpansion bounds what a compressed layer of n bytes may uncompress
// to, maxExpansion*n plus a MiB: gzip cannot exceed it (its best is about
// 1030 to 1), and a zstd layer that does is a bomb, not a layer.
const maxExpansion = 1032

// hashUncompressed returns the sha256 of what r, size bytes, uncompresses
// to.
func hashUncompressed(compression string, r io.Reader, size int64) (v1.Hash, error) {
	h := sha256.New()
	limit := size*maxExpansion + 1<<20
	var n int64
	var err error
	switch compression {
	case "gzip":
		var zr *gzip.Reader
		if zr, err = gzip.NewReader(r); err == nil {
			n, err = io.Copy(h, io.LimitReader(zr, limit+1))
		}
	case "zstd":
		// A window of more than 32 MiB (zstd's default at level 19 is 8) is
		// refused rather than allocated.
		var zr *zstd.Decoder
		if zr, err = zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(32<<20), zstd.WithDecoderLowmem(true)); err == nil {
			n, err = io.Copy(h, io.LimitReader(zr, limit+1))
			zr.Close()
		}
	default:
		_, err = io.Copy(h, r)
	}
	if err == nil && n > limit {
		err = fmt.Errorf("it expands to more than %d bytes, %d times its size", limit, maxExpansion)
	}
	if err != nil {
		return v1.Hash{}, fmt.Errorf("not valid %s: %v", compression, err)
	}
	return v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", h.Sum(nil))}, nil
}

// uncompressedHasher hashes the uncompressed bytes of a compressed stream
// written to it, in a goroutine of its own.
type uncompressedHasher struct {
	pw   *io.PipeWriter
	done chan result
}

type result struct {
	sum v1.Hash
	err error
}

func newUncompressedHasher(compression string, size int64) *uncompressedHasher {
	pr, pw := io.Pipe()
	g := &uncompressedHasher{pw: pw, done: make(chan result, 1)}
	go func() {
		sum, err := hashUncompressed(compression, pr, size)
		io.Copy(io.Discard, pr) // let the writer finish whatever happened
		g.done <- result{sum, err}
	}()
	return g
}

func (g *uncompressedHasher) Write(p []byte) (int, error) { return g.pw.Write(p) }

func (g *uncompressedHasher) finish() (v1.Hash, error) {
	g.pw.Close()
	r := <-g.done
	return r.sum, r.err
}

// ctxReader ends a copy when its context is cancelled (Ctrl-C).
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// readDir reads an OCI layout directory.
func (rd *reader) readDir(dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := rd.ctx.Err(); err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return err
		}
		if isSparseFile(st) {
			return fmt.Errorf("%s: %s is a sparse file (%d bytes, far fewer on disk); image layouts hold none", rd.label, rel, st.Size())
		}
		// A file that grows while it is read is read no further than one
		// byte past its size, which add then refuses.
		return rd.add(filepath.ToSlash(rel), st.Size(), io.LimitReader(f, st.Size()+1))
	})
}

// isSparseFile reports whether a file of more than 1 MiB takes less than a
// sixteenth of its size on disk: its holes would be read as zeros, for as
// long as it claims. A compressing file system stores image layers at a
// few times less, not sixteen.
func isSparseFile(st fs.FileInfo) bool {
	sys, ok := st.Sys().(*syscall.Stat_t)
	return ok && st.Size() > smallFile && sys.Blocks*512 < st.Size()/16
}

// readTar reads a tar archive, uncompressing a gzip'd one (docker load
// accepts `docker save | gzip`).
func (rd *reader) readTar(r io.Reader) error {
	br := bufio.NewReaderSize(r, 64<<10)
	head, _ := br.Peek(6)
	var src io.Reader = br
	switch {
	case bytes.HasPrefix(head, gzipMagic):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("%s: gzip-compressed, but %v", rd.label, err)
		}
		defer zr.Close()
		src = zr
	default:
		for _, c := range []struct {
			name  string
			magic []byte
		}{{"zstd", zstdMagic}, {"xz", xzMagic}, {"bzip2", bz2Magic}} {
			if bytes.HasPrefix(head, c.magic) {
				return fmt.Errorf("%s is %s-compressed; uncompress it first (cork bake reads plain and gzip'd tarballs)", rd.label, c.name)
			}
		}
	}
	cr := &countingReader{r: src}
	tr := tar.NewReader(cr)
	var end int64 // where the last entry's data ended
	entries := 0
	for {
		if err := rd.ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if err == io.EOF {
			if entries == 0 {
				return fmt.Errorf("%s is not an image: an empty or unreadable archive", rd.label)
			}
			// A tar ends with two zero blocks; an archive cut exactly
			// between two entries has none.
			if cr.n <= end {
				return fmt.Errorf("%s is truncated: it ends after entry %d with no end-of-archive marker", rd.label, entries)
			}
			return nil
		}
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return fmt.Errorf("%s is truncated in the middle of a tar header", rd.label)
			}
			if entries == 0 {
				return fmt.Errorf("%s is not an image archive (docker save tarball or OCI archive): %v", rd.label, err)
			}
			return fmt.Errorf("%s: after %d entries: %v", rd.label, entries, err)
		}
		entries++
		if err := rd.entry(h, tr); err != nil {
			return err
		}
		end = cr.n
		if pad := end % 512; pad != 0 {
			end += 512 - pad
		}
	}
}

// entry takes one tar entry: a file, or a link as docker save uses them to
// share a layer between images. Other entries (directories) carry nothing
// an image needs.
func (rd *reader) entry(h *tar.Header, r io.Reader) error {
	// A sparse entry's size is what it expands to, not what the archive
	// holds: a few bytes can claim a terabyte of zeros. No image tool
	// writes them.
	if isSparse(h) {
		return fmt.Errorf("%s: %s is a sparse file; image archives hold none", rd.label, shortName(h.Name))
	}
	switch h.Typeflag {
	case tar.TypeReg:
		return rd.add(h.Name, h.Size, r)
	case tar.TypeSymlink:
		return rd.link(h.Name, h.Linkname)
	case tar.TypeLink:
		return rd.link(h.Name, "/"+cleanName(h.Linkname))
	}
	return nil
}

// isSparse reports whether h is a GNU sparse file, in the old GNU format
// or in PAX records.
func isSparse(h *tar.Header) bool {
	if h.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range h.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// hashOf returns the sha256 digest of b.
func hashOf(b []byte) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sha256.Sum256(b))}
}
