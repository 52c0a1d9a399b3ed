package bake

import (
	"strings"
	"testing"
)

func TestLayoutNames(t *testing.T) {
	hex := strings.Repeat("0123456789abcdef", 4)
	for _, c := range []struct {
		name                  string
		blob, digested, layer bool
	}{
		{"blobs/sha256/" + hex, true, false, false},
		{"blobs/sha256/" + strings.ToUpper(hex), false, false, false},
		{"blobs/sha256/" + hex[1:], false, false, false},
		{"blobs/sha512/" + hex, false, false, false},
		{"x/blobs/sha256/" + hex, false, false, false},
		{hex + ".tar", false, true, false},
		{hex + ".json", false, true, false},
		{hex + ".tar.gz", false, false, false},
		{hex + ".txt", false, false, false},
		{hex[2:] + ".tar", false, false, false},
		{hex + "/layer.tar", false, false, true},
		{hex + "/layer.tar.gz", false, false, false},
		{"g" + hex[1:] + "/layer.tar", false, false, false},
	} {
		if _, got := blobHex(c.name); got != c.blob {
			t.Errorf("blobHex(%q) = %v", c.name, got)
		}
		if _, _, got := digestFileName(c.name); got != c.digested {
			t.Errorf("digestFileName(%q) = %v", c.name, got)
		}
		if got := isLegacyLayerName(c.name); got != c.layer {
			t.Errorf("isLegacyLayerName(%q) = %v", c.name, got)
		}
	}
}
