//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"time"

	"github.com/corkvm/cork/host/client"
	"github.com/corkvm/cork/host/e2e/harness"
	"github.com/corkvm/cork/host/transport"
	"github.com/corkvm/cork/protocol"
)

// startupSteps is one `true` run through the client library, timed step
// by step as cork exec takes them.
type startupSteps struct {
	dial, hello, started, exited time.Duration
}

func measureSteps(url, truePath string) startupSteps {
	var s startupSteps
	t := time.Now()
	conn, err := transport.Dial(context.Background(), url, transport.Options{})
	check(err)
	defer conn.Close()
	s.dial = time.Since(t)
	r, w := protocol.NewReader(conn), protocol.NewWriter(conn)
	t = time.Now()
	_, err = client.Hello(r, w, "bench")
	check(err)
	s.hello = time.Since(t)
	t = time.Now()
	check(w.WriteJSON(protocol.TypeExec, &protocol.Exec{Argv: []string{truePath}}))
	for {
		typ, _, err := r.Next()
		check(err)
		switch typ {
		case protocol.TypeStarted:
			s.started = time.Since(t)
			t = time.Now()
		case protocol.TypeExit:
			s.exited = time.Since(t)
			return s
		}
	}
}

// printStartupSteps breaks cork exec -- true down: the cork process's own
// start (cork --version), then each protocol step measured in this process.
func printStartupSteps(out io.Writer, b *harness.Binaries, url string, runs int) {
	truePath, err := exec.LookPath("true")
	check(err)
	var version, bare, goEmpty, dial, hello, started, exited []time.Duration
	for range runs {
		bare = append(bare, timed(exec.Command(truePath)))
		goEmpty = append(goEmpty, timed(exec.Command(b.Goempty)))
		version = append(version, timed(exec.Command(b.Cork, "--version")))
		s := measureSteps(url, truePath)
		dial, hello = append(dial, s.dial), append(hello, s.hello)
		started, exited = append(started, s.started), append(exited, s.exited)
	}
	fmt.Fprintf(out, "\nWhere a `cork exec -- true` goes, medians of %d runs interleaved with the rows above:\n\n", runs)
	fmt.Fprintln(out, "| step | median ms |")
	fmt.Fprintln(out, "|---|---|")
	fmt.Fprintf(out, "| a bare `true` (fork, exec, wait), for scale | %s |\n", ms(median(bare)))
	fmt.Fprintf(out, "| a Go program that does nothing, built as cork is, for scale | %s |\n", ms(median(goEmpty)))
	fmt.Fprintf(out, "| the cork process alone (`cork --version`) | %s |\n", ms(median(version)))
	fmt.Fprintf(out, "| dial the unix socket | %s |\n", ms(median(dial)))
	fmt.Fprintf(out, "| hello round trip | %s |\n", ms(median(hello)))
	fmt.Fprintf(out, "| exec request to Started (corkd forks and execs as the user) | %s |\n", ms(median(started)))
	fmt.Fprintf(out, "| Started to Exit (the program runs, corkd reaps it and drains its pipes) | %s |\n", ms(median(exited)))
}
