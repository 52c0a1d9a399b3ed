package cli

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// writeScript writes shell's completion script into a temporary file.
func writeScript(t *testing.T, shell string) string {
	t.Helper()
	var b bytes.Buffer
	if err := completionScripts[shell](&b, completedCommands()); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "cork."+shell)
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// spellings lists every way to write fs's flags, and --help.
func spellings(fs *pflag.FlagSet) []string {
	s := []string{"--help"}
	fs.VisitAll(func(f *pflag.Flag) {
		s = append(s, "--"+f.Name)
		if f.Shorthand != "" {
			s = append(s, "-"+f.Shorthand)
		}
	})
	slices.Sort(s)
	return s
}

func commandNames() []string {
	var names []string
	for _, c := range commands {
		names = append(names, c.name)
	}
	slices.Sort(names)
	return names
}

// completionDir holds a file and a directory for the completions of paths.
func completionDir(t *testing.T) string {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "envs"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "images"), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// bashWords splits line as bash does for a completion function: at blanks,
// and apart at = and :. A line that ends in a blank completes a new word.
var bashBreak = regexp.MustCompile(`[=:]+|[^=:]+`)

func bashWords(line string) []string {
	var words []string
	for _, f := range strings.Fields(line) {
		words = append(words, bashBreak.FindAllString(f, -1)...)
	}
	if strings.HasSuffix(line, " ") {
		words = append(words, "")
	}
	return words
}

// bashDriver sources the script, sets the COMP_ variables as bash would
// with the cursor at the end of the line and prints what _cork offers.
const bashDriver = `source "$1"
COMP_LINE=$2 COMP_POINT=${#2}
shift 2
COMP_WORDS=("$@") COMP_CWORD=$(($# - 1))
_cork
printf '%s\n' "${COMPREPLY[@]}"
`

// bashComplete runs the completion function of the script in real bash,
// in dir, for line.
func bashComplete(t *testing.T, script, dir, line string) []string {
	t.Helper()
	args := append([]string{"--norc", "--noprofile", "-c", bashDriver, "bash", script, line}, bashWords(line)...)
	cmd := exec.Command("bash", args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bash for %q: %v\n%s", line, err, out)
	}
	got := strings.Fields(string(out))
	slices.Sort(got)
	return got
}

func needShell(t *testing.T, shell string) {
	if _, err := exec.LookPath(shell); err != nil {
		t.Skipf("%s is not installed (apt-get install %s)", shell, shell)
	}
}

// TestBashCompletesEveryCommandAndFlag: cork <TAB> offers every command,
// and cork CMD -<TAB> every flag of the FlagSet CMD parses.
func TestBashCompletesEveryCommandAndFlag(t *testing.T) {
	needShell(t, "bash")
	script, dir := writeScript(t, "bash"), t.TempDir()
	if got, want := bashComplete(t, script, dir, "cork "), commandNames(); !slices.Equal(got, want) {
		t.Errorf("cork <TAB>: %q, want %q", got, want)
	}
	for _, c := range commands {
		line := "cork " + c.name + " -"
		if got, want := bashComplete(t, script, dir, line), spellings(c.flagSet()); !slices.Equal(got, want) {
			t.Errorf("%s<TAB>: %q\nwant %q", line, got, want)
		}
	}
}

// TestBashCompletesValuesAndArguments: a flag's FILE or DIR value and the
// arguments of cp and bake complete as paths, the other values not at
// all; no flag after --, nor after exec's COMMAND, which is the guest's.
func TestBashCompletesValuesAndArguments(t *testing.T) {
	needShell(t, "bash")
	script, dir := writeScript(t, "bash"), completionDir(t)
	for _, tc := range []struct {
		line string
		want []string
	}{
		{"cork exec --env-file ", []string{"envs", "images"}},
		{"cork exec --env-file=e", []string{"envs"}},
		{"cork exec -u ", nil},
		{"cork exec --user=", nil},
		{"cork exec -u root --t", []string{"--tty"}},
		{"cork exec -it sh -", nil},
		{"cork exec -- -", nil},
		{"cork cp ", []string{"envs", "images"}},
		{"cork cp --quiet e", []string{"envs"}},
		{"cork cp :/e", nil},
		{"cork cp envs :", nil},
		{"cork cp -- --", nil},
		{"cork bake --agent-dir ", []string{"images"}},
		{"cork bake -f i", []string{"images"}},
		{"cork completion ", []string{"bash", "fish", "zsh"}},
		{"cork attach ", nil},
		{"cork nosuch -", nil},
	} {
		if got := bashComplete(t, script, dir, tc.line); !slices.Equal(got, tc.want) {
			t.Errorf("%s<TAB>: %q, want %q", tc.line, got, tc.want)
		}
	}
}

// TestZshCompletionLoads: the zsh script parses, and loading it after
// compinit makes _cork cork's completion.
func TestZshCompletionLoads(t *testing.T) {
	needShell(t, "zsh")
	script := writeScript(t, "zsh")
	if out, err := exec.Command("zsh", "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("zsh -n: %v\n%s", err, out)
	}
	// compinit -D writes no dump file; HOME in a temporary directory keeps
	// the one it would write out of the real home all the same.
	load := exec.Command("zsh", "-f", "-c", `autoload -U compinit && compinit -u -D && source "$1" && [[ $_comps[cork] == _cork ]]`, "zsh", script)
	load.Env = append(os.Environ(), "HOME="+t.TempDir(), "ZDOTDIR=")
	if out, err := load.CombinedOutput(); err != nil {
		t.Fatalf("loading the zsh script: %v\n%s", err, out)
	}
}

// TestFishCompletesEveryCommandAndFlag: fish, which can complete a line
// without a terminal, offers every command and every flag.
func TestFishCompletesEveryCommandAndFlag(t *testing.T) {
	needShell(t, "fish")
	script, dir := writeScript(t, "fish"), completionDir(t)
	home := t.TempDir() // where fish keeps its variables and history
	complete := func(line string) []string {
		t.Helper()
		cmd := exec.Command("fish", "--no-config", "-c", `source $argv[1]; and complete -C $argv[2]`, script, line)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME=", "XDG_DATA_HOME=")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("fish for %q: %v\n%s", line, err, out)
		}
		var got []string
		for l := range strings.Lines(string(out)) {
			got = append(got, strings.TrimRight(strings.SplitN(l, "\t", 2)[0], "\n"))
		}
		slices.Sort(got)
		return got
	}
	if got, want := complete("cork "), commandNames(); !slices.Equal(got, want) {
		t.Errorf("cork <TAB>: %q, want %q", got, want)
	}
	for _, c := range commands {
		line := "cork " + c.name + " -"
		if got, want := complete(line), spellings(c.flagSet()); !slices.Equal(got, want) {
			t.Errorf("%s<TAB>: %q\nwant %q", line, got, want)
		}
	}
	if got := complete("cork exec -it sh -"); got != nil {
		t.Errorf("cork exec -it sh -<TAB>: %q, want nothing: the rest is the guest's command line", got)
	}
	if got, want := complete("cork bake --agent-dir "), []string{"images/"}; !slices.Equal(got, want) {
		t.Errorf("cork bake --agent-dir <TAB>: %q, want %q", got, want)
	}
}

// TestEveryFlagSetIsNamedForItsCommand: flagHelp finds a command's docs
// page by its FlagSet's name.
func TestEveryFlagSetIsNamedForItsCommand(t *testing.T) {
	for _, c := range commands {
		if fs := c.flagSet(); fs.Name() != "cork "+c.name {
			t.Errorf("cork %s parses the flags of %q", c.name, fs.Name())
		}
	}
}
