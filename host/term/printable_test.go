package term

import (
	"bytes"
	"encoding/json"
	"testing"
)

// TestPrintable: text from the agent reaches the terminal with what a
// terminal acts on escaped, and plain text as it is.
func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"permission denied":       "permission denied",
		"no space left on device": "no space left on device",
		"evil\x1b]0;title\x07":    `evil\x1b]0;title\a`,
		"two\nlines":              `two\nlines`,
		"tab\there":               `tab\there`,
		"del\x7f":                 `del\x7f`,
		"unicode é stays":         "unicode é stays",
		"c1 \u009b control":       `c1 \u009b control`,
		"raw c1 \x9b[2J":          `raw c1 \x9b[2J`,
		"bad utf-8 \xff\xfe":      `bad utf-8 \xff\xfe`,
		"a real \uFFFD stays":     "a real \uFFFD stays",
		`quotes "stay" \ as is`:   `quotes "stay" \ as is`,
	} {
		if got := Printable(in); got != want {
			t.Errorf("Printable(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestPrintableJSON: the controls encoding/json leaves raw are escaped,
// and the JSON still decodes to the same strings.
func TestPrintableJSON(t *testing.T) {
	in := map[string]string{"program": "p\u009b2J\x7f\x1b é"}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	got := PrintableJSON(b)
	if bytes.ContainsAny(got, "\x1b\x7f\u009b") {
		t.Fatalf("PrintableJSON left controls in %q", got)
	}
	var out map[string]string
	if err := json.Unmarshal(got, &out); err != nil || out["program"] != in["program"] {
		t.Fatalf("%q decodes to %q, %v; want %q", got, out["program"], err, in["program"])
	}
	plain := []byte(`{"a":"b"}`)
	if got := PrintableJSON(plain); !bytes.Equal(got, plain) {
		t.Fatalf("plain JSON changed: %q", got)
	}
}
