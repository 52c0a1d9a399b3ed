package bake

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/corkvm/cork/protocol"
)

// agentLayer is an uncompressed layer holding one root-owned executable.
// Only the file is in it: entries for its parent directories would replace
// the base image's own metadata for them.
func agentLayer(name string, data []byte, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg, Name: name, Mode: 0o755, Uid: 0, Gid: 0,
		Uname: "root", Gname: "root", Size: int64(len(data)), ModTime: mtime.UTC().Truncate(time.Second),
		Format: tar.FormatPAX,
	}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(data); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// machines maps an image architecture to the ELF machine of its corkd.
var machines = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

// checkMachine refuses a corkd built for another architecture than the
// image's: it would fail only when the VM runs it.
func checkMachine(path string, bin []byte, arch string) error {
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return fmt.Errorf("%s: not a Linux executable: %v", path, err)
	}
	if f.Machine != machines[arch] {
		built := f.Machine.String()
		for a, m := range machines {
			if m == f.Machine {
				built = "linux/" + a
			}
		}
		return fmt.Errorf("%s is built for %s, the image is linux/%s", path, built, arch)
	}
	return nil
}

// The version marker corkd's build stamps into the binary.
var (
	stampMarker = []byte(protocol.StampMarker)
	stampEnd    = []byte(protocol.StampEnd)
)

// agentVersion reads the version stamped into a corkd binary, without
// running it: it may be built for another architecture.
func agentVersion(bin []byte) string {
	for rest := bin; ; {
		i := bytes.Index(rest, stampMarker)
		if i < 0 {
			return "unknown"
		}
		rest = rest[i+len(stampMarker):]
		if j := bytes.Index(rest, stampEnd); j > 0 && j <= 128 && printable(rest[:j]) {
			return string(rest[:j])
		}
	}
}

func printable(b []byte) bool {
	for _, c := range b {
		if c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

// historyPrefix starts the history entry of the layer bake adds; a bake of
// an image that has one replaces that layer instead of stacking another.
const historyPrefix = "cork bake: corkd "

// imageConfig is an image's config, edited as JSON so that every field bake
// does not touch is written back as it came.
type imageConfig struct {
	raw    map[string]json.RawMessage
	rootfs struct {
		Type    string    `json:"type"`
		DiffIDs []v1.Hash `json:"diff_ids"`
	}
	history []map[string]any
	config  map[string]json.RawMessage
	labels  map[string]string
}

func parseConfig(b []byte) (*imageConfig, error) {
	c := &imageConfig{}
	if err := json.Unmarshal(b, &c.raw); err != nil {
		return nil, fmt.Errorf("image config: %v", err)
	}
	if err := unmarshalField(c.raw, "rootfs", &c.rootfs); err != nil {
		return nil, err
	}
	if err := unmarshalField(c.raw, "history", &c.history); err != nil {
		return nil, err
	}
	if err := unmarshalField(c.raw, "config", &c.config); err != nil {
		return nil, err
	}
	if err := unmarshalField(c.config, "Labels", &c.labels); err != nil {
		return nil, err
	}
	return c, nil
}

func unmarshalField(m map[string]json.RawMessage, key string, v any) error {
	raw, ok := m[key]
	if !ok || string(raw) == "null" {
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("image config: %s: %v", key, err)
	}
	return nil
}

func (c *imageConfig) platform() (os, arch, variant string) {
	var s string
	for key, dst := range map[string]*string{"os": &os, "architecture": &arch, "variant": &variant} {
		if json.Unmarshal(c.raw[key], &s) == nil {
			*dst = s
		}
		s = ""
	}
	return os, arch, variant
}

// bakedVersion returns the version of the corkd a previous bake added as
// the image's last layer, if it did.
func (c *imageConfig) bakedVersion() (string, bool) {
	for i := len(c.history) - 1; i >= 0; i-- {
		if empty, _ := c.history[i]["empty_layer"].(bool); empty {
			continue
		}
		by, _ := c.history[i]["created_by"].(string)
		if !strings.HasPrefix(by, historyPrefix) {
			return "", false
		}
		v, _, _ := strings.Cut(strings.TrimPrefix(by, historyPrefix), " ")
		return v, true
	}
	return "", false
}

// dropLastLayer removes the last layer's diff id and history entry.
func (c *imageConfig) dropLastLayer() {
	c.rootfs.DiffIDs = c.rootfs.DiffIDs[:len(c.rootfs.DiffIDs)-1]
	for i := len(c.history) - 1; i >= 0; i-- {
		if empty, _ := c.history[i]["empty_layer"].(bool); !empty {
			c.history = append(c.history[:i], c.history[i+1:]...)
			return
		}
	}
}

// addAgent records the agent's layer: its diff id, a history entry and the
// version label.
func (c *imageConfig) addAgent(diffID v1.Hash, version, path string, created time.Time) {
	if c.rootfs.Type == "" {
		c.rootfs.Type = "layers"
	}
	c.rootfs.DiffIDs = append(c.rootfs.DiffIDs, diffID)
	c.history = append(c.history, map[string]any{
		"created":    created.UTC().Format(time.RFC3339),
		"created_by": fmt.Sprintf("%s%s at %s", historyPrefix, version, path),
		"author":     "cork bake",
	})
	if c.labels == nil {
		c.labels = map[string]string{}
	}
	c.labels[Label] = version
}

func (c *imageConfig) marshal() ([]byte, error) {
	if c.config == nil {
		c.config = map[string]json.RawMessage{}
	}
	for key, v := range map[string]any{"Labels": c.labels} {
		b, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		c.config[key] = b
	}
	for key, v := range map[string]any{"rootfs": c.rootfs, "history": c.history, "config": c.config} {
		b, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		c.raw[key] = b
	}
	return json.Marshal(c.raw)
}
