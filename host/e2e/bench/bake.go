//go:build linux

package main

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/corkvm/cork/host/e2e/harness"
)

var bakeMiB = flag.Int("bake-mib", 600, "MiB of layers in the image the bake rows copy")

// printBake times cork bake beside skopeo copy of the same image in the
// same format: what image builders would otherwise run.
func printBake(out io.Writer, b *harness.Binaries) {
	dir := filepath.Join(b.Dir, "bake")
	check(os.MkdirAll(dir, 0o755))
	defer os.RemoveAll(dir)
	docker := filepath.Join(dir, "image.tar")
	writeImage(docker, *bakeMiB, 3)
	skopeo, err := exec.LookPath("skopeo")
	if err != nil {
		fmt.Fprintf(out, "\n#### cork bake\n\nskipped: skopeo is not installed (apt-get install skopeo), so there is no peer to compare with.\n")
		return
	}
	oci := filepath.Join(dir, "image-oci")
	check(run(exec.Command(skopeo, "copy", "-q", "docker-archive:"+docker, "oci:"+oci+":image")))

	type row struct {
		name string
		cmd  func(dst string) *exec.Cmd
		runs []time.Duration
	}
	bake := func(in string) func(string) *exec.Cmd {
		return func(dst string) *exec.Cmd { return exec.Command(b.Cork, "bake", "--agent", b.Corkd, in, dst) }
	}
	rows := []*row{
		{name: "cork bake, docker archive", cmd: bake(docker)},
		{name: "skopeo copy, docker archive", cmd: func(dst string) *exec.Cmd {
			return exec.Command(skopeo, "copy", "-q", "docker-archive:"+docker, "docker-archive:"+dst)
		}},
		{name: "cork bake, OCI layout (gzip layers)", cmd: bake(oci)},
		{name: "skopeo copy, OCI layout (gzip layers)", cmd: func(dst string) *exec.Cmd {
			return exec.Command(skopeo, "copy", "-q", "oci:"+oci+":image", "oci:"+dst+":image")
		}},
	}
	const rounds = 5
	for i := range rounds {
		for _, r := range rows {
			dst := filepath.Join(dir, "out")
			os.RemoveAll(dst)
			start := time.Now()
			check(run(r.cmd(dst)))
			r.runs = append(r.runs, time.Since(start))
			progress("bake round %d %s: %v", i, r.name, r.runs[len(r.runs)-1])
		}
	}
	os.RemoveAll(filepath.Join(dir, "out"))
	fmt.Fprintf(out, "\n#### cork bake\n\nAn image of %d MiB in 3 layers of random bytes, copied into a new image of the same format; %d rounds, the rows interleaved. The OCI layout is skopeo's copy of the docker archive (skopeo gzips its layers).\n\n", *bakeMiB, rounds)
	fmt.Fprintf(out, "| | median s | slowest s | MiB/s (median) |\n|---|---|---|---|\n")
	for _, r := range rows {
		m := median(r.runs)
		fmt.Fprintf(out, "| %s | %.2f | %.2f | %.0f |\n", r.name, m.Seconds(), slices.Max(r.runs).Seconds(), float64(*bakeMiB)/m.Seconds())
	}
	fmt.Fprintf(out, "\ncork ÷ skopeo, median time: docker archive %.2f, OCI layout %.2f (under 1: cork is faster).\n",
		median(rows[0].runs).Seconds()/median(rows[1].runs).Seconds(), median(rows[2].runs).Seconds()/median(rows[3].runs).Seconds())
}

func run(cmd *exec.Cmd) error {
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %v\n%s", cmd.Args, err, out)
	}
	return nil
}

// writeImage writes a docker archive as podman saves one: layers of random
// bytes named by their digest, the config, manifest.json.
func writeImage(path string, mib, layers int) {
	f, err := os.Create(path)
	check(err)
	defer f.Close()
	tw := tar.NewWriter(f)
	rng := rand.NewChaCha8([32]byte{1})
	var names, diffIDs []string
	for i := range layers {
		// The layer's own tar, then the layer as a file of the archive.
		tmp := path + ".layer"
		lf, err := os.Create(tmp)
		check(err)
		lw := tar.NewWriter(lf)
		size := int64(mib) << 20 / int64(layers)
		check(lw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("data%d", i), Size: size, Mode: 0o644}))
		_, err = io.CopyN(lw, rng, size)
		check(err)
		check(lw.Close())
		check(lf.Close())
		data, err := os.Open(tmp)
		check(err)
		h := sha256.New()
		n, err := io.Copy(h, data)
		check(err)
		hex := fmt.Sprintf("%x", h.Sum(nil))
		data.Seek(0, 0)
		check(tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: hex + ".tar", Size: n, Mode: 0o644}))
		_, err = io.Copy(tw, data)
		check(err)
		data.Close()
		os.Remove(tmp)
		names, diffIDs = append(names, hex+".tar"), append(diffIDs, "sha256:"+hex)
	}
	cfg, _ := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux", "config": map[string]any{},
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs}})
	cfgName := fmt.Sprintf("%x.json", sha256.Sum256(cfg))
	mf, _ := json.Marshal([]map[string]any{{"Config": cfgName, "RepoTags": []string{"localhost/bench:1"}, "Layers": names}})
	for _, file := range []struct {
		name string
		data []byte
	}{{cfgName, cfg}, {"manifest.json", mf}} {
		check(tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: file.name, Size: int64(len(file.data)), Mode: 0o644}))
		_, err := tw.Write(file.data)
		check(err)
	}
	check(tw.Close())
}
