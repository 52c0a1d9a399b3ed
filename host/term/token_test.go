//go:build linux

package term

import (
	"os"
	"testing"

	"github.com/creack/pty"
)

// TestToken: a terminal's token stays the same through its use, another
// terminal's differs, and what is no terminal has none.
func TestToken(t *testing.T) {
	master, slave, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	defer slave.Close()
	tok := Token(int(slave.Fd()))
	if len(tok) != 32 {
		t.Fatalf("token %q", tok)
	}
	slave.Write([]byte("output\n"))
	master.Read(make([]byte, 64))
	if again := Token(int(slave.Fd())); again != tok {
		t.Fatalf("the token changed with use: %q, then %q", tok, again)
	}
	m2, s2, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	defer s2.Close()
	if other := Token(int(s2.Fd())); other == tok || other == "" {
		t.Fatalf("another terminal's token %q, this one's %q", other, tok)
	}
	f, err := os.CreateTemp(t.TempDir(), "file")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := Token(int(f.Fd())); got != "" {
		t.Fatalf("a file's token %q", got)
	}
}
