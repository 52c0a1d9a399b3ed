// Package cli is the cork command line.
package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/corkvm/cork/host/client"
	"github.com/corkvm/cork/host/term"
	"github.com/corkvm/cork/host/transport"
	"github.com/corkvm/cork/protocol"
)

// Version is cork's version, set by the main package.
var Version = "dev"

// A command is one of cork's subcommands. Main dispatches on the table,
// the usage lists it, and cork completion learns each command's flags by
// running its main up to parseFlags (see flagsOnly).
type command struct {
	name    string
	args    string // what follows the command in its usage line
	summary string
	main    func(args []string) int
	doc     string // the page of docs/ that tells the whole of it

	// How TAB completes the command's arguments: as host files, or from
	// words; with neither, nothing is offered.
	fileArgs bool
	argWords []string
}

// commands is filled in init: the commands' mains read the table (their
// --help names the docs page), so a variable's initializer would be a
// cycle.
var commands []command

func init() {
	commands = []command{
		{name: "exec", args: "[flags] -- COMMAND [ARG...]", summary: "run a program in the VM (--keep: a session that outlives cork)",
			main: execMain, doc: "docs/sessions.md"},
		{name: "attach", args: "[flags] NAME|ID", summary: "attach to a kept session (--read-only: watch it)",
			main: attachMain, doc: "docs/kept-sessions.md"},
		{name: "peek", args: "[--ansi|--text] [--json] NAME|ID", summary: "print a kept session's screen",
			main: peekMain, doc: "docs/kept-sessions.md"},
		{name: "ls", args: "[--json]", summary: "list kept sessions",
			main: lsMain, doc: "docs/kept-sessions.md"},
		{name: "kill", args: "[--signal SIG] NAME|ID", summary: "hang up (or signal) a kept session",
			main: killMain, doc: "docs/kept-sessions.md"},
		{name: "rm", args: "NAME|ID", summary: "forget an exited kept session",
			main: rmMain, doc: "docs/kept-sessions.md"},
		{name: "cp", args: "[flags] SRC... DEST", summary: "copy files in or out (:PATH is in the guest; - is a tar stream)",
			main: copyMain, doc: "docs/copying.md", fileArgs: true},
		{name: "forward", args: "[flags] LOCAL:REMOTE...", summary: "carry host ports and sockets to the guest's (8080:80)",
			main: forwardMain, doc: "docs/forwarding.md"},
		{name: "ping", args: "[flags]", summary: "check that corkd answers, and how fast",
			main: pingMain, doc: "docs/sessions.md"},
		{name: "bake", args: "[flags] IN OUT", summary: "add corkd to a container image",
			main: bakeMain, doc: "docs/bake.md", fileArgs: true},
		{name: "completion", args: "bash|zsh|fish", summary: "print the script that completes cork's commands in your shell",
			main: completionMain, doc: "docs/host-tools.md", argWords: slices.Sorted(maps.Keys(completionScripts))},
		{name: "version", summary: "print cork's version", main: versionMain},
	}
}

func lookupCommand(name string) *command {
	for i := range commands {
		if commands[i].name == name {
			return &commands[i]
		}
	}
	return nil
}

// usage lists the commands, one line each.
func usage(w io.Writer) {
	fmt.Fprintln(w, "usage:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-37s   %s\n", strings.TrimSpace("cork "+c.name+" "+c.args), c.summary)
	}
}

// Main runs cork with args (without the program name) and returns the exit
// status.
func Main(args []string) int {
	if len(args) == 0 {
		usage(os.Stderr)
		return ExitCorkError
	}
	switch args[0] {
	case "--version":
		return versionMain(args[1:])
	case "help", "-h", "--help":
		usage(os.Stdout)
		return 0
	}
	if c := lookupCommand(args[0]); c != nil {
		return c.main(args[1:])
	}
	fmt.Fprintf(os.Stderr, "cork: unknown command %q\n", args[0])
	usage(os.Stderr)
	return ExitCorkError
}

func versionMain(args []string) int {
	fs := pflag.NewFlagSet("cork version", pflag.ContinueOnError)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	fmt.Printf("cork %s (protocol %d)\n", Version, protocol.MaxVersion)
	return 0
}

// flagsOnly, when set, takes each FlagSet that parseFlags is given in
// place of parsing it, and the command returns before doing anything:
// this is how cork completion reads every command's flags from the
// definitions the command itself parses with.
var flagsOnly func(*pflag.FlagSet)

// parseFlags parses args into fs. When it reports false the command
// returns code: 0 after --help, ExitCorkError after a bad flag, which it
// names on stderr.
func parseFlags(fs *pflag.FlagSet, args []string) (code int, ok bool) {
	if flagsOnly != nil {
		flagsOnly(fs)
		return 0, false
	}
	own := fs.Usage
	fs.Usage = func() { flagHelp(fs, own) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0, false
		}
		return fail("%v", err), false
	}
	return 0, true
}

// flagHelp is a command's --help: its own usage (or its flags), then
// where its page is.
func flagHelp(fs *pflag.FlagSet, own func()) {
	if own != nil {
		own()
	} else {
		fmt.Fprintf(fs.Output(), "Usage of %s:\n%s", fs.Name(), fs.FlagUsages())
	}
	if c := lookupCommand(strings.TrimPrefix(fs.Name(), "cork ")); c != nil && c.doc != "" {
		fmt.Fprintf(fs.Output(), "\nThe whole of %s: %s in cork's source.\n", fs.Name(), c.doc)
	}
}

func fail(format string, a ...any) int {
	say(format, a...)
	return ExitCorkError
}

// say prints one line of cork's on stderr. Its arguments often hold text
// from the agent (an error's message, a session's name, a takeover's
// reason): the whole line is made printable, so that none of it can drive
// the operator's terminal.
func say(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "cork: %s\n", term.Printable(fmt.Sprintf(format, a...)))
}

// flagsForMessages spells the target's flags for a command line printed
// in a message.
func (t *target) flagsForMessages() string {
	switch {
	case t.machine != "":
		return "--machine " + t.machine + " "
	case t.connect != "":
		return "--connect " + t.connect + " "
	}
	return ""
}

// target is where a session goes: --connect or --machine.
type target struct {
	connect string
	machine string
	smolvm  string
	agent   string
	timeout time.Duration
}

func (t *target) flags(fs *pflag.FlagSet) {
	fs.StringVar(&t.connect, "connect", "", "corkd's address: unix:///path, vsock://CID:PORT or hvsock:///path:PORT")
	fs.StringVar(&t.machine, "machine", "", "run corkd in smolvm machine `NAME` through smolvm machine exec")
	smolvm := os.Getenv("CORK_SMOLVM")
	if smolvm == "" {
		smolvm = "smolvm"
	}
	fs.StringVar(&t.smolvm, "smolvm", smolvm, "the smolvm binary (env CORK_SMOLVM)")
	fs.StringVar(&t.agent, "agent", transport.DefaultAgent, "corkd's path inside the guest, for --machine")
	fs.DurationVar(&t.timeout, "connect-timeout", 10*time.Second, "time allowed to connect")
}

// dial opens the session's stream. The cleanup it returns reports a
// failure of the smolvm process, if any.
func (t *target) dial(ctx context.Context) (io.ReadWriteCloser, func() error, error) {
	switch {
	case t.connect != "" && t.machine != "":
		return nil, nil, errors.New("--connect and --machine name two different agents: give one")
	case t.connect != "":
		c, err := transport.Dial(ctx, t.connect, transport.Options{Timeout: t.timeout})
		return c, func() error { return nil }, err
	case t.machine != "":
		m := &transport.Machine{Smolvm: t.smolvm, Name: t.machine, Agent: t.agent, Stderr: os.Stderr}
		c, err := m.Dial(ctx)
		if err != nil {
			return nil, nil, err
		}
		return c, c.Close, nil
	}
	return nil, nil, errors.New("no agent given: use --connect URL or --machine NAME")
}

// call dials the agent and gives do the connection, which do closes,
// then waits for the transport to end. Its failure then (smolvm's) is
// not do's: the request has had its answer.
func (t *target) call(do func(conn io.ReadWriteCloser) error) error {
	conn, finish, err := t.dial(context.Background())
	if err != nil {
		return err
	}
	err = do(conn)
	finish()
	return err
}

type execFlags struct {
	target
	interactive bool
	tty         bool
	user        string
	env         []string
	envFiles    []string
	workdir     string
	keep        bool
	sshAgent    bool
	name        string
	linger      time.Duration
	orAttach    bool
	kept        keptFlags
}

// keptFlags are the flags of a client of a kept session: exec --keep and
// attach.
type keptFlags struct {
	detachKeys string
	reconnect  time.Duration
}

func (k *keptFlags) flags(fs *pflag.FlagSet) {
	fs.StringVar(&k.detachKeys, "detach-keys", term.DefaultDetachKeys, "keys that detach from a kept session, docker's syntax (\"\" for none)")
	fs.DurationVar(&k.reconnect, "reconnect", 30*time.Second, "how long to try to get back to a kept session whose connection dropped (0: do not)")
}

func execMain(args []string) int {
	var f execFlags
	fs := pflag.NewFlagSet("cork exec", pflag.ContinueOnError)
	fs.SetInterspersed(false) // flags after COMMAND are the command's
	f.target.flags(fs)
	fs.BoolVarP(&f.interactive, "interactive", "i", false, "forward stdin")
	fs.BoolVarP(&f.tty, "tty", "t", false, "allocate a PTY in the guest")
	fs.StringVarP(&f.user, "user", "u", "", "run as `NAME|UID` (default: corkd's own user)")
	fs.StringArrayVarP(&f.env, "env", "e", nil, "set `K=V`; K alone passes the host's value (repeatable)")
	fs.StringArrayVar(&f.envFiles, "env-file", nil, "read K=V lines from `FILE` (repeatable)")
	fs.StringVarP(&f.workdir, "workdir", "w", "", "working directory (default: the user's home)")
	fs.BoolVarP(&f.sshAgent, "forward-agent", "A", false, "carry the host's ssh agent into the session (SSH_AUTH_SOCK), as ssh -A")
	fs.BoolVar(&f.keep, "keep", false, "keep the session when the connection drops or you detach (needs -t)")
	fs.StringVar(&f.name, "name", "", "name the kept session (unique among your sessions; default: its id)")
	fs.DurationVar(&f.linger, "linger", 24*time.Hour, "hang a kept session up after this long detached, and forget it this long after it exits detached (0: never)")
	fs.BoolVar(&f.orAttach, "attach-existing", false, "with --keep --name: attach to your session of that name if there is one, start it if not (tmux new -A)")
	f.kept.flags(fs)
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: cork exec [flags] -- COMMAND [ARG...]\n%s", fs.FlagUsages())
	}
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() == 0 {
		return fail("exec: no command given (cork exec [flags] -- COMMAND [ARG...])")
	}
	if !f.keep && (f.name != "" || fs.Changed("linger") || f.orAttach) {
		return fail("exec: --name, --linger and --attach-existing are for kept sessions: add --keep")
	}
	if f.orAttach && f.name == "" {
		return fail("exec: --attach-existing needs --name: the session to attach to if it exists")
	}
	env, err := buildEnv(f.envFiles, f.env)
	if err != nil {
		return fail("%v", err)
	}
	req := protocol.Exec{
		Argv: fs.Args(), Env: env, User: f.user, Dir: f.workdir,
		TTY: f.tty, Stdin: f.interactive, Keep: f.keep, Name: f.name, AttachExisting: f.orAttach,
	}
	if f.keep {
		req.LingerSeconds = int64(f.linger / time.Second)
		if f.linger == 0 {
			req.LingerSeconds = -1
		}
	}
	if f.sshAgent {
		sock, stop, err := forwardAgent(&f.target, f.user, "")
		if err != nil {
			return fail("exec -A: %v", err)
		}
		defer stop()
		req.Env = append(req.Env, "SSH_AUTH_SOCK="+sock)
	}
	if err := req.Validate(); err != nil {
		return fail("%v", err)
	}
	return runSession(&f.target, &client.Session{Exec: req}, f.kept)
}

// buildEnv reads env files, then -e entries, in order. An entry without =
// takes the host's value and is dropped when the host has none, as in
// docker.
func buildEnv(files, entries []string) ([]string, error) {
	var env []string
	add := func(kv, where string) error {
		if strings.IndexByte(kv, 0) >= 0 {
			return fmt.Errorf("%s: environment entry contains a NUL byte", where)
		}
		k, _, ok := strings.Cut(kv, "=")
		if k == "" {
			return fmt.Errorf("%s: environment entry %q has no name", where, kv)
		}
		if !ok {
			v, set := os.LookupEnv(k)
			if !set {
				return nil
			}
			kv = k + "=" + v
		}
		env = append(env, kv)
		return nil
	}
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return nil, fmt.Errorf("--env-file: %v", err)
		}
		s := bufio.NewScanner(f)
		for line := 1; s.Scan(); line++ {
			kv := strings.TrimSpace(s.Text())
			if kv == "" || strings.HasPrefix(kv, "#") {
				continue
			}
			if err := add(kv, fmt.Sprintf("%s:%d", name, line)); err != nil {
				f.Close()
				return nil, err
			}
		}
		f.Close()
		if err := s.Err(); err != nil {
			return nil, fmt.Errorf("--env-file %s: %v", name, err)
		}
	}
	for _, kv := range entries {
		if err := add(kv, "-e"); err != nil {
			return nil, err
		}
	}
	return env, nil
}

func pingMain(args []string) int {
	var t target
	count := 3
	fs := pflag.NewFlagSet("cork ping", pflag.ContinueOnError)
	t.flags(fs)
	fs.IntVarP(&count, "count", "c", count, "pings to send")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if err := t.call(func(conn io.ReadWriteCloser) error { return ping(conn, count) }); err != nil {
		return fail("%v", err)
	}
	return 0
}

// ping says hello on conn, which it closes, then pings count times, and
// prints how long each answer took.
func ping(conn io.ReadWriteCloser, count int) error {
	defer conn.Close()
	r, w := protocol.NewReader(conn), protocol.NewWriter(conn)
	start := time.Now()
	h, err := client.Hello(r, w, "cork "+Version)
	if err != nil {
		return err
	}
	fmt.Printf("%s, protocol %d, hello in %v\n", term.Printable(h.Software), h.Version, time.Since(start).Round(time.Microsecond))
	for i := range count {
		start := time.Now()
		if err := client.Ping(r, w, []byte(fmt.Sprint(i))); err != nil {
			return fmt.Errorf("ping %d: %w", i, err)
		}
		fmt.Printf("pong %d: %v\n", i, time.Since(start).Round(time.Microsecond))
	}
	return nil
}
