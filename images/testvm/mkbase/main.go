// Command mkbase writes the test VM's base image, an OCI image layout for
// linux/amd64 with one layer made from a list in the format of package
// fslist. It holds no corkd: cork bake adds that.
//
//	mkbase -o DIR < list
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/corkvm/cork/images/testvm/fslist"
)

func main() {
	out := flag.String("o", "", "output OCI layout directory (must not exist)")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "usage: mkbase -o DIR < list")
		os.Exit(2)
	}
	if err := run(*out); err != nil {
		fmt.Fprintf(os.Stderr, "mkbase: %v\n", err)
		os.Exit(1)
	}
}

func run(out string) error {
	entries, err := fslist.Parse(os.Stdin)
	if err != nil {
		return err
	}
	layerTar, err := tarOf(entries)
	if err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer})
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config = v1.Config{Entrypoint: []string{"/init"}, Env: []string{"PATH=/usr/local/bin:/bin"},
		Labels: map[string]string{"org.corkvm.image": "testvm-base"}}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return err
	}
	p, err := layout.Write(out, empty.Index)
	if err != nil {
		return err
	}
	return p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "testvm-base"}))
}

func tarOf(entries []fslist.Entry) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: strings.TrimPrefix(e.Name, "/"), Mode: int64(e.Mode), Uid: int(e.UID), Gid: int(e.GID),
			ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		switch e.Kind {
		case "dir":
			h.Typeflag, h.Name = tar.TypeDir, h.Name+"/"
		case "file":
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.Data))
		case "slink":
			h.Typeflag, h.Linkname = tar.TypeSymlink, e.Target
		case "nod":
			h.Typeflag, h.Devmajor, h.Devminor = tar.TypeChar, int64(e.Major), int64(e.Minor)
			if e.Block {
				h.Typeflag = tar.TypeBlock
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.Data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
