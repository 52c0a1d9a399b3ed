package cli

import (
	"testing"

	"github.com/corkvm/cork/host/client"
)

// TestSummaryLine: the summary counts what landed, says how much did not,
// and gets the plural right.
func TestSummaryLine(t *testing.T) {
	for _, c := range []struct {
		res  client.CopyResult
		want string
	}{
		{client.CopyResult{Files: 1, Bytes: 4}, "Copied 4 B in 1 file to /d"},
		{client.CopyResult{Files: 3, Bytes: 3 << 20}, "Copied 3.0 MiB in 3 files to /d"},
		{client.CopyResult{Problems: 1}, "Copied nothing to /d; 1 not copied (named above)"},
		{client.CopyResult{Files: 2, Bytes: 10, Problems: 3}, "Copied 10 B in 2 files to /d; 3 not copied (named above)"},
	} {
		if got := summaryLine(&c.res, "/d"); got != c.want {
			t.Errorf("%+v: %q, want %q", c.res, got, c.want)
		}
	}
}
