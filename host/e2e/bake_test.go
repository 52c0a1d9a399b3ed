//go:build linux

package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/corkvm/cork/host/e2e/harness"
	"github.com/corkvm/cork/host/e2e/termtest"
)

// cork bake, run as users run it, its results checked with the image tools
// they already have: skopeo, umoci and podman (Debian packages; a test
// whose tool is missing says so and skips).

// podman runs podman with its own storage under the test's directory, so
// nothing is left in the machine's image store; the flags are the ones
// podman needs to run containers on these machines.
type podman struct {
	t    *testing.T
	root string
}

func newPodman(t *testing.T) *podman {
	needTools(t, "podman")
	// podman refuses a runroot path of more than 50 characters.
	root, err := os.MkdirTemp("", "podman")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	return &podman{t: t, root: root}
}

func (p *podman) cmd(args ...string) *exec.Cmd {
	return exec.Command("podman", append([]string{"--root", p.root + "/storage", "--runroot", p.root + "/run",
		"--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--runtime", "runc", "--events-backend", "none"}, args...)...)
}

func (p *podman) run(args ...string) string {
	p.t.Helper()
	out, err := p.cmd(args...).CombinedOutput()
	if err != nil {
		p.t.Fatalf("podman %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// agentDir holds the corkd the tests built, where cork bake looks for it.
func agentDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "linux-amd64"), 0o755)
	data, err := os.ReadFile(bin.Corkd)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "linux-amd64", "corkd"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// myagent makes a small agent image in podman's store: a passwd file and a
// node user, nothing else.
func myagent(t *testing.T, p *podman, name string) {
	t.Helper()
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc", "passwd"), []byte("root:x:0:0:root:/root:/bin/sh\nnode:x:1000:1000::/home/node:/bin/sh\n"), 0o644)
	tarball := filepath.Join(t.TempDir(), "base.tar")
	if out, err := exec.Command("tar", "-C", root, "-cf", tarball, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	p.run("import", "--change", "USER=node", tarball, name)
}

func corkBake(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin.Cork, append([]string{"bake", "--agent-dir", agentDir(t)}, args...)...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cork bake %v: %v\n%s", args, err, out)
	}
}

// TestBakeReadmeCommandLines runs every cork bake line the README shows,
// with podman save standing in for docker save (no Docker engine here) and
// podman load for smolvm, and checks each result with the image tools.
func TestBakeReadmeCommandLines(t *testing.T) {
	needTools(t, "skopeo", "umoci")
	p := newPodman(t)
	myagent(t, p, "localhost/myagent:1.0")
	dir := t.TempDir()
	p.run("save", "--format", "oci-dir", "-o", filepath.Join(dir, "myagent-oci"), "localhost/myagent:1.0")
	p.run("save", "-o", filepath.Join(dir, "myagent.tar"), "localhost/myagent:1.0")

	// cork bake myagent-oci/ myagent-corkd-oci/
	corkBake(t, dir, "myagent-oci/", "myagent-corkd-oci/")
	unpacked := filepath.Join(t.TempDir(), "bundle")
	if out, err := exec.Command("umoci", "unpack", "--image", filepath.Join(dir, "myagent-corkd-oci")+":localhost/myagent:1.0", unpacked).CombinedOutput(); err != nil {
		t.Fatalf("umoci unpack: %v\n%s", err, out)
	}
	if st, err := os.Stat(filepath.Join(unpacked, "rootfs", "usr", "local", "bin", "corkd")); err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("corkd in the unpacked image: %v", err)
	}

	// cork bake --format oci-archive myagent.tar myagent-corkd.oci.tar
	corkBake(t, dir, "--format", "oci-archive", "myagent.tar", "myagent-corkd.oci.tar")
	raw, err := exec.Command("skopeo", "inspect", "--raw", "oci-archive:"+filepath.Join(dir, "myagent-corkd.oci.tar")).Output()
	if err != nil {
		t.Fatalf("skopeo inspect: %v", err)
	}
	var m struct {
		MediaType string
		Config    struct{ MediaType string }
		Layers    []struct{ MediaType string }
	}
	json.Unmarshal(raw, &m)
	if m.MediaType != "application/vnd.oci.image.manifest.v1+json" || m.Config.MediaType != "application/vnd.oci.image.config.v1+json" || len(m.Layers) != 2 {
		t.Fatalf("manifest of the OCI archive made from a docker archive: %s", raw)
	}
	p.run("load", "-i", filepath.Join(dir, "myagent-corkd.oci.tar"))

	// docker save myagent | cork bake - - | smolvm machine run --image - ...
	save := p.cmd("save", "localhost/myagent:1.0")
	bake := exec.Command(bin.Cork, "bake", "--agent-dir", agentDir(t), "-", "-")
	load := p.cmd("load")
	bake.Stdin, _ = save.StdoutPipe()
	load.Stdin, _ = bake.StdoutPipe()
	var loadOut bytes.Buffer
	load.Stdout, load.Stderr = &loadOut, &loadOut
	for _, c := range []*exec.Cmd{save, bake, load} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []*exec.Cmd{save, bake, load} {
		if err := c.Wait(); err != nil {
			t.Fatalf("%v: %v\n%s", c.Args, err, loadOut.String())
		}
	}
	out, err := p.cmd("run", "--rm", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768",
		"--user", "root", "localhost/myagent:1.0", "/usr/local/bin/corkd", "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "corkd ") {
		t.Fatalf("corkd in a container of the baked image: %v, %q", err, out)
	}
	// The README's line for an image whose ENTRYPOINT is not corkd.
	out, err = p.cmd("run", "--rm", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768",
		"--entrypoint", "/usr/local/bin/corkd", "localhost/myagent:1.0", "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "corkd ") {
		t.Fatalf("podman run --entrypoint /usr/local/bin/corkd: %v, %q", err, out)
	}
	if user := strings.TrimSpace(p.run("inspect", "--format", "{{.Config.User}}", "localhost/myagent:1.0")); user != "node" {
		t.Fatalf("baked image's user %q, want node kept", user)
	}
}

// TestBakedLayoutReadableByOtherUsers: skopeo, run as another user,
// reads and verifies an OCI layout cork bake wrote with umask 022.
func TestBakedLayoutReadableByOtherUsers(t *testing.T) {
	needTools(t, "skopeo")
	if os.Geteuid() != 0 {
		t.Skip("needs root to run skopeo as nobody")
	}
	p := newPodman(t)
	myagent(t, p, "localhost/myagent:1.0")
	dir, err := os.MkdirTemp("", "cork-bake-modes")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	p.run("save", "-o", filepath.Join(dir, "myagent.tar"), "localhost/myagent:1.0")
	old := syscall.Umask(0o022)
	corkBake(t, dir, "--format", "oci", "myagent.tar", "out-oci")
	syscall.Umask(old)
	dest := filepath.Join(dir, "copy")
	os.Mkdir(dest, 0o777)
	os.Chmod(dest, 0o777)
	cmd := exec.Command("skopeo", "copy", "oci:"+filepath.Join(dir, "out-oci"), "dir:"+dest)
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), "HOME=/tmp")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("skopeo as nobody: %v\n%s", err, out)
	}
}

// TestBakeInterrupted: Ctrl-C or SIGTERM in the middle of a bake leaves
// nothing beside the output and nothing in TMPDIR.
func TestBakeInterrupted(t *testing.T) {
	// docker save before Docker 25 names layers ID/layer.tar: converted to
	// an OCI archive, such a layer is spooled (beside the output, or in
	// TMPDIR for stdout) until the config names its digest.
	data := legacyDockerArchive(t, 4<<20)
	whole := exec.Command(bin.Cork, "bake", "--agent-dir", agentDir(t), "--format", "oci-archive", "-", filepath.Join(t.TempDir(), "whole.tar"))
	whole.Stdin = bytes.NewReader(data)
	if out, err := whole.CombinedOutput(); err != nil {
		t.Fatalf("baking the whole legacy archive: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		sig  syscall.Signal
		out  string
		code int
	}{{syscall.SIGINT, "out.tar", 130}, {syscall.SIGTERM, "out.tar", 143}, {syscall.SIGTERM, "-", 143}} {
		t.Run(tc.sig.String()+" to "+tc.out, func(t *testing.T) {
			dir, tmp := t.TempDir(), t.TempDir()
			cmd := exec.Command(bin.Cork, "bake", "--agent-dir", agentDir(t), "--format", "oci-archive", "-", tc.out)
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
			stdin, _ := cmd.StdinPipe()
			cmd.Stdout = io.Discard
			stderr := &harness.Buffer{}
			cmd.Stderr = stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// Most of the image, then nothing: the bake is mid-way.
			go stdin.Write(data[:len(data)*3/4])
			where := dir
			if tc.out == "-" {
				where = tmp
			}
			termtest.WaitFor(t, "the bake's spool file", 10*time.Second, func() bool {
				if strings.Contains(stderr.String(), "cork:") {
					t.Fatalf("cork bake ended early: %s", stderr.String())
				}
				found := false
				filepath.WalkDir(where, func(p string, d fs.DirEntry, err error) error {
					found = found || strings.HasPrefix(filepath.Base(p), "spool-")
					return nil
				})
				return found
			})
			cmd.Process.Signal(tc.sig)
			waitOrKill(t, cmd, 20*time.Second)
			stdin.Close()
			if code := cmd.ProcessState.ExitCode(); code != tc.code || !strings.Contains(stderr.String(), "interrupted") {
				t.Fatalf("exit %d, %q; want %d and a message", code, stderr.String(), tc.code)
			}
			for _, d := range []string{dir, tmp} {
				if ents, _ := os.ReadDir(d); len(ents) > 0 {
					t.Fatalf("left in %s: %v", d, ents)
				}
			}
		})
	}
}

// legacyDockerArchive is a docker save tarball as Docker before 25 wrote
// them: one random layer of size bytes at ID/layer.tar, the config, then
// manifest.json.
func legacyDockerArchive(t *testing.T, size int) []byte {
	t.Helper()
	var layer bytes.Buffer
	lw := tar.NewWriter(&layer)
	payload := make([]byte, size)
	rand.Read(payload)
	lw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "data", Size: int64(size), Mode: 0o644})
	lw.Write(payload)
	lw.Close()
	diffID := fmt.Sprintf("sha256:%x", sha256.Sum256(layer.Bytes()))
	cfg, _ := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux",
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{diffID}}})
	cfgName := fmt.Sprintf("%x.json", sha256.Sum256(cfg))
	id := strings.Repeat("ab", 32)
	mf, _ := json.Marshal([]map[string]any{{"Config": cfgName, "RepoTags": []string{"example.com/legacy:1"}, "Layers": []string{id + "/layer.tar"}}})
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	for _, f := range []struct {
		name string
		data []byte
	}{{id + "/layer.tar", layer.Bytes()}, {cfgName, cfg}, {"manifest.json", mf}} {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Size: int64(len(f.data)), Mode: 0o644})
		tw.Write(f.data)
	}
	tw.Close()
	return out.Bytes()
}

// TestBakeSecondSignalExits: a bake stuck where it cannot notice a
// signal (here opening its agent, a FIFO nobody writes, as a hung file
// system would hold it) exits at once on a second Ctrl-C, leaving nothing
// beside the output or in TMPDIR (issue 25 item 3: the second was
// swallowed, and only SIGKILL ended it, leaving its staging directory).
func TestBakeSecondSignalExits(t *testing.T) {
	dir, tmp := t.TempDir(), t.TempDir()
	in, fifo := filepath.Join(dir, "in.tar"), filepath.Join(dir, "corkd")
	if err := os.WriteFile(in, legacyDockerArchive(t, 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin.Cork, "bake", "-q", "--agent", fifo, in, filepath.Join(dir, "out.tar"))
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	stderr := &harness.Buffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Opening a FIFO's write end without blocking works once a reader
	// has it open: then the bake is in its read of the agent.
	var w *os.File
	termtest.WaitFor(t, "the bake to open its agent", 10*time.Second, func() bool {
		f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0)
		w = f
		return err == nil
	})
	defer w.Close()
	cmd.Process.Signal(syscall.SIGINT)
	termtest.WaitFor(t, "the bake to take the first signal", 10*time.Second, func() bool {
		return strings.Contains(stderr.String(), "stopping")
	})
	cmd.Process.Signal(syscall.SIGINT)
	waitOrKill(t, cmd, 10*time.Second)
	if code := cmd.ProcessState.ExitCode(); code != 130 {
		t.Fatalf("exit %d, %q; want 130", code, stderr.String())
	}
	for d, want := range map[string]int{dir: 2, tmp: 0} {
		if ents, _ := os.ReadDir(d); len(ents) != want {
			t.Fatalf("left in %s: %v", d, ents)
		}
	}
}

// TestBakeCleansAfterKilledBake: what a bake killed by SIGKILL leaves
// beside its output is removed by the next bake there, while a bake still
// running keeps its own (issue 25 item 6).
func TestBakeCleansAfterKilledBake(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.tar")
	if err := os.WriteFile(in, legacyDockerArchive(t, 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	// Two bakes stuck opening their agent, a FIFO: one is killed.
	stuck := func(name string) (*exec.Cmd, string) {
		fifo := filepath.Join(t.TempDir(), "corkd")
		if err := syscall.Mkfifo(fifo, 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin.Cork, "bake", "-q", "--agent", fifo, in, filepath.Join(dir, name))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd, fmt.Sprintf(".cork-bake-%d-", cmd.Process.Pid)
	}
	killed, killedArea := stuck("killed.tar")
	_, runningArea := stuck("running.tar")
	areas := func() string {
		ents, _ := os.ReadDir(dir)
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return strings.Join(names, " ")
	}
	termtest.WaitFor(t, "both bakes' staging areas", 10*time.Second, func() bool {
		return strings.Contains(areas(), killedArea) && strings.Contains(areas(), runningArea)
	})
	killed.Process.Kill()
	killed.Wait()
	corkBake(t, dir, in, filepath.Join(dir, "out.tar"))
	if left := areas(); strings.Contains(left, killedArea) || !strings.Contains(left, runningArea) {
		t.Fatalf("after the next bake: %s; want %s* gone and %s* kept", left, killedArea, runningArea)
	}
}

// TestBakeProgressOnTerminal: a bake that takes longer than a second shows
// a progress line on a terminal; writing an image to a terminal is refused.
func TestBakeProgressOnTerminal(t *testing.T) {
	p := newPodman(t)
	myagent(t, p, "localhost/myagent:1.0")
	dir := t.TempDir()
	src := filepath.Join(dir, "myagent.tar")
	p.run("save", "-o", src, "localhost/myagent:1.0")
	data, _ := os.ReadFile(src)
	fifo := filepath.Join(dir, "slow.tar")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	tm := termtest.Start(t, 24, 100, bin.Cork, "bake", "--agent-dir", agentDir(t), fifo, filepath.Join(dir, "out.tar"))
	w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The image over about 1.5 s.
	for i, chunk := 0, len(data)/15+1; i < len(data); i += chunk {
		w.Write(data[i:min(i+chunk, len(data))])
		time.Sleep(100 * time.Millisecond)
	}
	w.Close()
	if code := tm.Wait(t); code != 0 {
		t.Fatalf("cork bake exited %d: %q", code, tm.Out.String())
	}
	if out := tm.Out.String(); !strings.Contains(out, "cork bake: ") || !strings.Contains(out, "MiB/s") {
		t.Fatalf("no progress line on the terminal: %q", out)
	}

	tm = termtest.Start(t, 24, 100, bin.Cork, "bake", "--agent-dir", agentDir(t), src, "-")
	if code := tm.Wait(t); code != 125 || !strings.Contains(tm.Out.String(), "refusing to write an image to a terminal") {
		t.Fatalf("cork bake IN - on a terminal: exit %d, %q", code, tm.Out.String())
	}
}

// TestBakeMultiPlatformWithSkopeo: a two-platform OCI index with an
// attestation, baked by the CLI, copied whole by skopeo (which checks every
// digest) and listed with its two platforms.
func TestBakeMultiPlatformWithSkopeo(t *testing.T) {
	needTools(t, "skopeo")
	dir := t.TempDir()
	in := filepath.Join(dir, "in")
	var adds []mutate.IndexAddendum
	for _, arch := range []string{"amd64", "arm64"} {
		img, err := random.Image(1024, 2)
		if err != nil {
			t.Fatal(err)
		}
		img = mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
		cf, _ := img.ConfigFile()
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture = "linux", arch
		img, _ = mutate.ConfigFile(img, cf)
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	att, _ := random.Image(64, 1)
	adds = append(adds, mutate.IndexAddendum{Add: mutate.MediaType(att, types.OCIManifestSchema1), Descriptor: v1.Descriptor{
		Platform: &v1.Platform{OS: "unknown", Architecture: "unknown"}, Annotations: map[string]string{"vnd.docker.reference.type": "attestation-manifest"}}})
	p, err := layout.Write(in, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendIndex(mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex),
		layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "multi"})); err != nil {
		t.Fatal(err)
	}
	agents := agentDir(t)
	arm, _ := os.ReadFile(bin.CorkdARM64)
	os.MkdirAll(filepath.Join(agents, "linux-arm64"), 0o755)
	os.WriteFile(filepath.Join(agents, "linux-arm64", "corkd"), arm, 0o755)
	cmd := exec.Command(bin.Cork, "bake", "--agent-dir", agents, in, filepath.Join(dir, "out"))
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "dropped 1 attestation") {
		t.Fatalf("cork bake: %v\n%s", err, out)
	}
	if out, err := exec.Command("skopeo", "copy", "--all", "oci:"+filepath.Join(dir, "out")+":multi", "oci:"+filepath.Join(dir, "copy")+":multi").CombinedOutput(); err != nil {
		t.Fatalf("skopeo copy --all: %v\n%s", err, out)
	}
	raw, err := exec.Command("skopeo", "inspect", "--raw", "oci:"+filepath.Join(dir, "copy")+":multi").Output()
	if err != nil {
		t.Fatal(err)
	}
	var idx v1.IndexManifest
	json.Unmarshal(raw, &idx)
	var platforms []string
	for _, m := range idx.Manifests {
		platforms = append(platforms, m.Platform.String())
	}
	if strings.Join(platforms, " ") != "linux/amd64 linux/arm64" {
		t.Fatalf("baked index lists %v: %s", platforms, raw)
	}
}

// TestBakeMaxOutput: --max-output bounds what cork bake writes, however
// far a gzip'd input expands, with an error naming the bound and nothing
// left; a value it cannot read is refused before anything is read.
func TestBakeMaxOutput(t *testing.T) {
	var in bytes.Buffer
	zw := gzip.NewWriter(&in)
	zw.Write(legacyDockerArchive(t, 8<<20))
	zw.Close()
	for _, tc := range []struct{ max, text string }{
		{"4M", "past 4 MiB (--max-output)"},
		{"4X", `--max-output "4X": want a positive number of bytes`},
	} {
		dir := t.TempDir()
		cmd := exec.Command(bin.Cork, "bake", "-q", "--agent-dir", agentDir(t), "--max-output", tc.max, "-", filepath.Join(dir, "out.tar"))
		cmd.Stdin = bytes.NewReader(in.Bytes())
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.text) {
			t.Fatalf("--max-output %s: %v, %s; want %q", tc.max, err, out, tc.text)
		}
		if ents, _ := os.ReadDir(dir); len(ents) > 0 {
			t.Fatalf("left %v", ents)
		}
	}
}
