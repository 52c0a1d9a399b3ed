package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
	codes := make(chan int, 1)
	go func() { codes <- serve(args) }()
	select {
	case code := <-codes:
		w.Close()
		return code, <-out
	case <-time.After(10 * time.Second):
		t.Fatalf("corkd serve %q still serves after 10s; want it to fail at once", args)
		return 0, ""
	}
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

// TestBadFlagFailsBeforeListening: every flag is checked before corkd
// sets anything up: a bad one is an error naming it, with exit 2, and no
// socket is bound nor pid file written.
func TestBadFlagFailsBeforeListening(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--log-level", "loud"}, "--log-level"},
		{[]string{"--stdio"}, "--stdio"},
		{[]string{"--max-frame", "100"}, "--max-frame"},
		{[]string{"--max-sessions", "0"}, "--max-sessions"},
		{[]string{"--max-pending", "0"}, "--max-pending"},
		{[]string{"--keep-buffer", "1"}, "--keep-buffer"},
		{[]string{"--max-kept", "0"}, "--max-kept"},
		{[]string{"--max-kept-per-uid", "0"}, "--max-kept-per-uid"},
		{[]string{"--screen-scrollback", "-1"}, "--screen-scrollback"},
		{[]string{"--disconnect-grace", "0s"}, "--disconnect-grace"},
		{[]string{"--linger", "-1s"}, "--linger"},
		{[]string{"--allow-uid", "4294967296"}, "--allow-uid"},
		{[]string{"--allow-cid", "4294967298"}, "--allow-cid"},
		{[]string{"--socket-group", "no-such-group-here"}, "--socket-group"},
		{[]string{"--forwarding", "some"}, "--forwarding"},
		{[]string{"--max-streams", "0"}, "--max-streams"},
	} {
		dir := t.TempDir()
		sock, pid := filepath.Join(dir, "corkd.sock"), filepath.Join(dir, "corkd.pid")
		args := append([]string{"--listen", "unix://" + sock, "--pid-file", pid}, c.args...)
		code, stderr := serveFails(t, args...)
		if code != 2 || !strings.Contains(stderr, c.want) {
			t.Errorf("%q: exit %d, stderr %q; want 2 and %s named", c.args, code, stderr, c.want)
		}
		for _, p := range []string{sock, pid} {
			if _, err := os.Lstat(p); err == nil {
				t.Errorf("%q: %s was made before the flag was refused", c.args, filepath.Base(p))
			}
		}
	}
}
