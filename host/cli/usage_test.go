package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// TestHelpNamesTheDocsPage: every command's --help ends with the page of
// docs/ that tells the whole of it, and that page exists.
func TestHelpNamesTheDocsPage(t *testing.T) {
	for _, c := range commands {
		name, page := "cork "+c.name, c.doc
		if page == "" {
			continue
		}
		fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
		fs.Bool("x", false, "a flag")
		var out bytes.Buffer
		fs.SetOutput(&out)
		if _, ok := parseFlags(fs, []string{"--help"}); ok {
			t.Fatalf("%s --help went on", name)
		}
		if !strings.Contains(out.String(), page) || !strings.Contains(out.String(), "-x") {
			t.Errorf("%s --help:\n%s\nwant its flags and %s", name, out.String(), page)
		}
		if _, err := os.Stat(filepath.Join("..", "..", page)); err != nil {
			t.Errorf("%s names %s: %v", name, page, err)
		}
	}
}
