// Command mkinitramfs writes a newc cpio archive, the format the kernel
// unpacks as its initramfs, so that no root, cpio or fakeroot is needed.
// Its entries come from an OCI image layout, flattened (-oci), then from a
// list on stdin in the format of package fslist.
//
//	mkinitramfs [-oci DIR] -o initramfs.cpio < list
package main

import (
	"archive/tar"
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/corkvm/cork/images/testvm/fslist"
)

func main() {
	out := flag.String("o", "", "output file")
	oci := flag.String("oci", "", "an OCI image layout whose one image is flattened in first")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "usage: mkinitramfs [-oci DIR] -o FILE < list")
		os.Exit(2)
	}
	var entries []fslist.Entry
	if *oci != "" {
		img, err := flatten(*oci)
		if err != nil {
			fatal(err)
		}
		entries = img
	}
	listed, err := fslist.Parse(os.Stdin)
	if err != nil {
		fatal(err)
	}
	entries = append(entries, listed...)
	// Directories first, parents before children: the kernel creates each
	// file in a directory that must already exist.
	sort.SliceStable(entries, func(i, j int) bool {
		di, dj := entries[i].Kind == "dir", entries[j].Kind == "dir"
		if di != dj {
			return di
		}
		return di && entries[i].Name < entries[j].Name
	})
	f, err := os.Create(*out)
	if err != nil {
		fatal(err)
	}
	w := &writer{w: bufio.NewWriter(f)}
	for _, e := range entries {
		if err := w.entry(e); err != nil {
			fatal(fmt.Errorf("%s: %v", e.Name, err))
		}
	}
	if err := w.close(); err != nil {
		fatal(err)
	}
	if err := f.Close(); err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintf(os.Stderr, "mkinitramfs: %v\n", err)
	os.Exit(1)
}

// flatten reads the layout's one image as the filesystem its layers make.
func flatten(dir string) ([]fslist.Entry, error) {
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, err
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	if len(m.Manifests) != 1 {
		return nil, fmt.Errorf("%s: %d manifests, want one image", dir, len(m.Manifests))
	}
	img, err := idx.Image(m.Manifests[0].Digest)
	if err != nil {
		return nil, err
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	var out []fslist.Entry
	data := map[string][]byte{} // for hard links
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		e := fslist.Entry{Name: "/" + strings.TrimPrefix(path.Clean(h.Name), "/"), Mode: uint32(h.Mode) & 0o7777, UID: uint32(h.Uid), GID: uint32(h.Gid)}
		switch h.Typeflag {
		case tar.TypeDir:
			e.Kind = "dir"
		case tar.TypeReg:
			e.Kind = "file"
			if e.Data, err = io.ReadAll(tr); err != nil {
				return nil, err
			}
			data[e.Name] = e.Data
		case tar.TypeLink:
			e.Kind, e.Data = "file", data["/"+strings.TrimPrefix(path.Clean(h.Linkname), "/")]
		case tar.TypeSymlink:
			e.Kind, e.Target = "slink", h.Linkname
		case tar.TypeChar, tar.TypeBlock:
			e.Kind, e.Block, e.Major, e.Minor = "nod", h.Typeflag == tar.TypeBlock, uint32(h.Devmajor), uint32(h.Devminor)
		default:
			continue // fifos and the like: nothing the test VM needs
		}
		out = append(out, e)
	}
}

// File type bits of a cpio mode.
const (
	typeDir  = 0o040000
	typeReg  = 0o100000
	typeLink = 0o120000
	typeChr  = 0o020000
	typeBlk  = 0o060000
)

type writer struct {
	w   *bufio.Writer
	ino uint32
	off int64
}

func (w *writer) entry(e fslist.Entry) error {
	name := strings.TrimPrefix(e.Name, "/")
	switch e.Kind {
	case "dir":
		return w.header(name, typeDir|e.Mode, e.UID, e.GID, 0, 0, nil)
	case "slink":
		return w.header(name, typeLink|e.Mode, e.UID, e.GID, 0, 0, []byte(e.Target))
	case "file":
		return w.header(name, typeReg|e.Mode, e.UID, e.GID, 0, 0, e.Data)
	case "nod":
		t := uint32(typeChr)
		if e.Block {
			t = typeBlk
		}
		return w.header(name, t|e.Mode, e.UID, e.GID, e.Major, e.Minor, nil)
	}
	return fmt.Errorf("unknown entry type %q", e.Kind)
}

// header writes one newc entry: "070701", thirteen 8-digit hex fields, the
// NUL-terminated name padded to 4 bytes, then the data padded to 4 bytes.
func (w *writer) header(name string, mode, uid, gid, rmaj, rmin uint32, data []byte) error {
	w.ino++
	nlink := uint32(1)
	if mode&0o170000 == typeDir {
		nlink = 2
	}
	fields := []uint32{w.ino, mode, uid, gid, nlink, 0, uint32(len(data)), 0, 0, rmaj, rmin, uint32(len(name) + 1), 0}
	var b strings.Builder
	b.WriteString("070701")
	for _, v := range fields {
		fmt.Fprintf(&b, "%08x", v)
	}
	b.WriteString(name)
	b.WriteByte(0)
	if err := w.write([]byte(b.String())); err != nil {
		return err
	}
	return w.write(data)
}

func (w *writer) write(p []byte) error {
	if _, err := w.w.Write(p); err != nil {
		return err
	}
	w.off += int64(len(p))
	pad := (4 - w.off%4) % 4
	w.off += pad
	_, err := w.w.Write(make([]byte, pad))
	return err
}

func (w *writer) close() error {
	if err := w.header("TRAILER!!!", 0, 0, 0, 0, 0, nil); err != nil {
		return err
	}
	return w.w.Flush()
}
