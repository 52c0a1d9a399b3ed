// Package images holds the recipes for baking corkd into agent images.
// Its test checks that the Dockerfile builds corkd exactly as make does:
// no Docker engine runs on the test machines, so the recipe is compared,
// not built.
package images

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/corkvm/cork/protocol"
)

// normalize reduces a Go build command line to its words, with the
// version variable and the go binary spelled one way.
func normalize(s string) []string {
	s = strings.NewReplacer("$(GO)", "go", "$(VERSION)", "VERSION", "${VERSION}", "VERSION", `\`, "").Replace(s)
	var words []string
	for _, w := range strings.Fields(s) {
		if strings.HasPrefix(w, "GOOS=") || strings.HasPrefix(w, "GOARCH=") {
			continue // the platform is the build's, not the recipe's
		}
		words = append(words, w)
	}
	return words
}

func TestDockerfileBuildsLikeMake(t *testing.T) {
	mk, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	df, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^GOBUILD = (.*)$`).FindSubmatch(mk)
	if m == nil {
		t.Fatal("no GOBUILD line in the Makefile")
	}
	// The Makefile's corkd rule appends the output and the package.
	want := normalize(string(m[1]) + " -o OUT ./guest/cmd/corkd")
	d := regexp.MustCompile(`(?m)^RUN (.*go build .*)$`).FindSubmatch(df)
	if d == nil {
		t.Fatal("no go build RUN line in the Dockerfile")
	}
	got := normalize(strings.Replace(string(d[1]), "-o /out/corkd", "-o OUT", 1))
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("the Dockerfile builds corkd differently from make:\n  Dockerfile: %s\n  Makefile:   %s", strings.Join(got, " "), strings.Join(want, " "))
	}
	// cork bake reads corkd's version by protocol.Stamp's marker.
	if stamp := "-X main.stamp=" + protocol.Stamp("$(VERSION)"); !strings.Contains(string(m[1]), stamp) {
		t.Errorf("the Makefile's build line does not stamp %q", stamp)
	}
	for _, need := range []string{"CGO_ENABLED=0", "-trimpath", "GOARCH=$TARGETARCH", "FROM ${BASE}", "/usr/local/bin/corkd"} {
		if !strings.Contains(string(df), need) {
			t.Errorf("the Dockerfile lacks %q", need)
		}
	}
}
