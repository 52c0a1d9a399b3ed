package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/corkvm/cork/host/client"
	"github.com/corkvm/cork/host/term"
	"github.com/corkvm/cork/protocol"
)

// The commands for kept sessions: attach, ls, kill, rm.

func attachMain(args []string) int {
	var t target
	var kf keptFlags
	readOnly, sshAgent := false, false
	fs := pflag.NewFlagSet("cork attach", pflag.ContinueOnError)
	t.flags(fs)
	kf.flags(fs)
	fs.BoolVarP(&sshAgent, "forward-agent", "A", false, "carry the host's ssh agent to the session's SSH_AUTH_SOCK again (one cork exec -A made)")
	fs.BoolVarP(&readOnly, "read-only", "r", false, "watch: see the screen as it changes, send no input, never size the session")
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: cork attach [flags] NAME|OWNER/NAME|ID\n%s", fs.FlagUsages())
	}
	ref, code, ok := parseOneSession(fs, args, "attach")
	if !ok {
		return code
	}
	if sshAgent {
		_, stop, err := forwardAgent(&t, "", ref)
		if err != nil {
			return fail("attach -A: %v", err)
		}
		defer stop()
	}
	return runSession(&t, &client.Session{Attach: &protocol.Attach{Session: ref, ReadOnly: readOnly}}, kf)
}

func peekMain(args []string) int {
	var t target
	ansi, text, asJSON := false, false, false
	fs := pflag.NewFlagSet("cork peek", pflag.ContinueOnError)
	t.flags(fs)
	fs.BoolVar(&ansi, "ansi", false, "print the screen with its colours and styles")
	fs.BoolVar(&text, "text", false, "print the screen as plain text (the default)")
	fs.BoolVar(&asJSON, "json", false, "print the screen, its size and cursor as JSON, for tools")
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: cork peek [flags] NAME|ID\n%s", fs.FlagUsages())
	}
	ref, code, ok := parseOneSession(fs, args, "peek")
	if !ok {
		return code
	}
	if ansi && text {
		return fail("peek: --ansi and --text: give one")
	}
	var snap *protocol.Snapshot
	err := t.call(func(conn io.ReadWriteCloser) (err error) {
		snap, err = client.Peek(conn, "cork "+Version, ref, ansi)
		return err
	})
	if err != nil {
		return fail("peek: %v", err)
	}
	if asJSON {
		b, _ := json.MarshalIndent(snap, "", "  ")
		fmt.Println(string(term.PrintableJSON(b)))
		return 0
	}
	// Trailing blank lines are no part of what the program shows.
	lines := snap.Lines
	for len(lines) > 0 && strings.TrimSpace(lines[len(lines)-1]) == "" {
		lines = lines[:len(lines)-1]
	}
	for _, l := range lines {
		if !ansi {
			l = term.Printable(l)
		}
		fmt.Println(l)
	}
	return 0
}

// parseOneSession parses flags and the one NAME|ID argument.
func parseOneSession(fs *pflag.FlagSet, args []string, cmd string) (string, int, bool) {
	if code, ok := parseFlags(fs, args); !ok {
		return "", code, false
	}
	if fs.NArg() != 1 {
		return "", fail("%s: want one session, by name or id (cork ls lists them)", cmd), false
	}
	return fs.Arg(0), 0, true
}

func lsMain(args []string) int {
	var t target
	asJSON := false
	fs := pflag.NewFlagSet("cork ls", pflag.ContinueOnError)
	t.flags(fs)
	fs.BoolVar(&asJSON, "json", false, "print the sessions as JSON, for tools")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	var sessions []protocol.SessionInfo
	err := t.call(func(conn io.ReadWriteCloser) (err error) {
		sessions, err = client.List(conn, "cork "+Version)
		return err
	})
	if err != nil {
		return fail("ls: %v", err)
	}
	if asJSON {
		b, _ := json.MarshalIndent(&protocol.Sessions{Sessions: sessions}, "", "  ")
		fmt.Println(string(term.PrintableJSON(b)))
		return 0
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tOWNER\tUSER\tPROGRAM\tSTARTED\tSTATE\tSIZE")
	now := time.Now()
	for _, s := range sessions {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s ago\t%s\t%s\n", term.Printable(s.ID), term.Printable(orDash(s.Name)),
			term.Printable(orDash(s.Owner)), term.Printable(s.User), term.Printable(s.Program),
			since(now, s.Started), term.Printable(state(now, s)), s.Size)
	}
	tw.Flush()
	return 0
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// since is a duration as ls shows it: whole seconds, minutes, hours, days.
func since(now, t time.Time) string {
	d := now.Sub(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func state(now time.Time, s protocol.SessionInfo) string {
	st := runState(now, s)
	if s.Watchers > 0 {
		st += fmt.Sprintf(", %d watching", s.Watchers)
	}
	return st
}

func runState(now time.Time, s protocol.SessionInfo) string {
	if s.State == protocol.StateExited && s.Exit != nil {
		if s.Exit.Signal != "" {
			return fmt.Sprintf("exited %d (SIG%s)", s.Exit.Code, s.Exit.Signal)
		}
		return fmt.Sprintf("exited %d", s.Exit.Code)
	}
	if s.Attached {
		return "running, attached"
	}
	if s.DetachedSince != nil {
		return "running, detached " + since(now, *s.DetachedSince)
	}
	return "running, detached"
}

func killMain(args []string) int {
	var t target
	sig := ""
	fs := pflag.NewFlagSet("cork kill", pflag.ContinueOnError)
	t.flags(fs)
	fs.StringVarP(&sig, "signal", "s", "", "send `SIG` (TERM, KILL, INT, ...) instead of hanging the session up (HUP, then KILL after corkd's grace)")
	ref, code, ok := parseOneSession(fs, args, "kill")
	if !ok {
		return code
	}
	sig = strings.TrimPrefix(strings.ToUpper(sig), "SIG")
	err := t.call(func(conn io.ReadWriteCloser) error {
		return client.Kill(conn, "cork "+Version, ref, sig)
	})
	if err != nil {
		return fail("kill: %v", err)
	}
	return 0
}

func rmMain(args []string) int {
	var t target
	fs := pflag.NewFlagSet("cork rm", pflag.ContinueOnError)
	t.flags(fs)
	ref, code, ok := parseOneSession(fs, args, "rm")
	if !ok {
		return code
	}
	err := t.call(func(conn io.ReadWriteCloser) error {
		return client.Remove(conn, "cork "+Version, ref)
	})
	if err != nil {
		return fail("rm: %v", err)
	}
	return 0
}
