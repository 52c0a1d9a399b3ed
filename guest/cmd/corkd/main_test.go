package main

import (
	"io"
	"os"
	"strings"
	"testing"
)

// serveFails runs corkd serve with args and returns its exit code and what
// it wrote to stderr.
func serveFails(t *testing.T, args ...string) (int, string) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := os.Stderr
	os.Stderr = w
	defer func() { os.Stderr = stderr }()
	out := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		out <- string(b)
	}()
	code := serve(args)
	w.Close()
	return code, <-out
}

// TestHandshakeTimeoutMustBePositive: a zero or negative
// --handshake-timeout is a flag error naming the flag. Zero used to take
// the default and a negative one to cut every connection at once.
func TestHandshakeTimeoutMustBePositive(t *testing.T) {
	for _, v := range []string{"0s", "-1s"} {
		code, stderr := serveFails(t, "--listen", "unix:///nonexistent/corkd.sock", "--handshake-timeout", v)
		if code != 2 || !strings.Contains(stderr, "--handshake-timeout "+v+": want a positive duration") {
			t.Errorf("--handshake-timeout %s: exit %d, stderr %q; want 2 and the flag named", v, code, stderr)
		}
	}
}
