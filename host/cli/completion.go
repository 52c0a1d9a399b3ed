package cli

import (
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"text/template"

	"github.com/spf13/pflag"
)

// completionScripts writes each shell's script from the commands' flags.
var completionScripts = map[string]func(io.Writer, []completed) error{
	"bash": func(w io.Writer, cs []completed) error { return bashScript.Execute(w, cs) },
	"zsh":  func(w io.Writer, cs []completed) error { return zshScript.Execute(w, cs) },
	"fish": func(w io.Writer, cs []completed) error { return fishScript.Execute(w, cs) },
}

const completionUsage = `usage: cork completion bash|zsh|fish
  Prints the script that completes cork's commands, flags and file
  arguments in your shell. Load it at start-up:
    bash: source <(cork completion bash)        in ~/.bashrc
    zsh:  source <(cork completion zsh)         in ~/.zshrc, after compinit
    fish: cork completion fish | source         in ~/.config/fish/config.fish
`

func completionMain(args []string) int {
	fs := pflag.NewFlagSet("cork completion", pflag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, completionUsage) }
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	write := completionScripts[fs.Arg(0)]
	if fs.NArg() != 1 || write == nil {
		shells := slices.Sorted(maps.Keys(completionScripts))
		return fail("completion: want one shell: %s", strings.Join(shells, ", "))
	}
	if err := write(os.Stdout, completedCommands()); err != nil {
		return fail("completion: %v", err)
	}
	return 0
}

// completed is what a completion script knows of one command.
type completed struct {
	Name, Summary string
	Flags         []completedFlag
	// FlagsFirst: the command's flags end at its first argument (exec:
	// the rest is the program's command line).
	FlagsFirst bool
	FileArgs   bool     // its arguments are host files
	ArgWords   []string // or one of these words
}

// completedFlag is one flag of a command, in the spellings a script needs.
type completedFlag struct {
	Long, Short string // "--user", "-u"; Short is "" for a flag without one
	Help        string // its usage, the value's name unquoted
	// Value names the flag's value ("FILE", "DIR", "NAME|UID", "duration"),
	// "" for a flag that takes none. FILE and DIR complete as paths.
	Value      string
	Repeatable bool
}

// completedCommands reads every command's flags from its own FlagSet.
func completedCommands() []completed {
	cs := make([]completed, len(commands))
	for i, c := range commands {
		fs := c.flagSet()
		cs[i] = completed{Name: c.name, Summary: c.summary, Flags: completedFlags(fs), FlagsFirst: !interspersed(fs),
			FileArgs: c.fileArgs, ArgWords: c.argWords}
	}
	return cs
}

// flagSet runs c's main up to its parseFlags, which hands over the
// FlagSet it would have parsed.
func (c *command) flagSet() *pflag.FlagSet {
	var got *pflag.FlagSet
	flagsOnly = func(fs *pflag.FlagSet) { got = fs }
	defer func() { flagsOnly = nil }()
	c.main(nil)
	if got == nil {
		panic("cork " + c.name + " returned before parseFlags: cork completion cannot read its flags")
	}
	return got
}

// interspersed reports whether fs takes flags after an argument. pflag
// has no getter for it, but a FlagSet that stops at the first argument
// keeps a -- after it as an argument.
func interspersed(fs *pflag.FlagSet) bool {
	_ = fs.Parse([]string{"arg", "--"})
	return fs.NArg() == 1
}

func completedFlags(fs *pflag.FlagSet) []completedFlag {
	var flags []completedFlag
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		name, help := pflag.UnquoteUsage(f)
		c := completedFlag{Long: "--" + f.Name, Help: help, Repeatable: strings.HasSuffix(f.Value.Type(), "Array")}
		if f.Shorthand != "" {
			c.Short = "-" + f.Shorthand
		}
		if f.NoOptDefVal == "" {
			c.Value = name
		}
		flags = append(flags, c)
	})
	return flags
}

// Spellings lists every way to write c's flags, --help included.
func (c completed) Spellings() string {
	s := []string{"--help"}
	for _, f := range c.Flags {
		s = append(s, f.Long)
		if f.Short != "" {
			s = append(s, f.Short)
		}
	}
	return strings.Join(s, " ")
}

// ValueSpellings lists the spellings of c's flags that take the next word
// as their value, only those whose value is kind unless kind is "".
func (c completed) ValueSpellings(kind string) string {
	var s []string
	for _, f := range c.Flags {
		if f.Value != "" && (kind == "" || f.Value == kind) {
			s = append(s, f.Long)
			if f.Short != "" {
				s = append(s, f.Short)
			}
		}
	}
	return strings.Join(s, " ")
}

// Zsh is f's _arguments spec: -u and --user exclude each other, a
// repeatable flag may come again, FILE and DIR complete as paths.
func (f completedFlag) Zsh() string {
	short, long, arg := f.Short, f.Long, ""
	if f.Value != "" {
		short, long = short+"+", long+"="
		arg = ":" + zshQuote(f.Value, ":") + ": "
	}
	switch f.Value {
	case "FILE":
		arg = ":FILE:_files"
	case "DIR":
		arg = ":DIR:_files -/"
	}
	names, only := long, ""
	if f.Short != "" {
		names = "{" + short + "," + long + "}"
		only = "'(" + f.Short + " " + f.Long + ")'"
	}
	if f.Repeatable {
		only = "'*'"
	}
	return only + names + "'[" + zshQuote(f.Help, "[]:") + "]" + arg + "'"
}

// zshQuote makes s fit between single quotes, with a backslash before
// each of the characters special to _arguments there.
func zshQuote(s, special string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\\' || strings.ContainsRune(special, r):
			b.WriteRune('\\')
		case r == '\'':
			b.WriteString(`'\''`)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Fish is f's complete options: its names, what its value is and its help.
func (f completedFlag) Fish() string {
	s := "-l " + strings.TrimPrefix(f.Long, "--")
	if f.Short != "" {
		s += " -s " + strings.TrimPrefix(f.Short, "-")
	}
	switch f.Value {
	case "":
	case "FILE":
		s += " -r -F"
	case "DIR":
		s += " -x -a '(__fish_complete_directories)'"
	default:
		s += " -x"
	}
	return s + " -d " + fishQuote(f.Help)
}

var completionFuncs = template.FuncMap{"join": strings.Join, "zshQuote": zshQuote, "fishQuote": fishQuote}

func fishQuote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

var bashScript = template.Must(template.New("bash").Funcs(completionFuncs).Parse(`# bash completion for cork, made by ` + "`cork completion bash`" + ` from the flags
# cork itself parses. Load it in ~/.bashrc with
#     source <(cork completion bash)
# or save it as "cork" in bash-completion's completions directory.

# _cork_reply adds the words on its stdin to COMPREPLY, less $1: the part of
# the word that bash split off at = or : and leaves on the line.
_cork_reply() {
	local w
	while IFS= read -r w; do
		COMPREPLY+=("${w#"$1"}")
	done
}

_cork() {
	# Bash splits words at = and : (--env-file=FILE, :PATH); glue the
	# pieces that nothing separates on the line back together.
	local words=() cword=0 line=$COMP_LINE i w rest
	for ((i = 0; i < ${#COMP_WORDS[@]}; i++)); do
		w=${COMP_WORDS[i]}
		rest=${line#"${line%%[![:space:]]*}"}
		if ((i > 0)) && [[ $rest == "$line" ]]; then
			words[${#words[@]}-1]+=$w
		else
			words+=("$w")
		fi
		line=${rest#"$w"}
		((i == COMP_CWORD)) && cword=$((${#words[@]} - 1))
	done
	local cur=${words[cword]} lead=${words[cword]}
	w=${COMP_WORDS[COMP_CWORD]}
	[[ $w =~ ^[=:]+$ ]] || lead=${cur%"$w"}

	COMPREPLY=()
	if ((cword == 1)); then
		_cork_reply "$lead" < <(compgen -W '{{range $i, $c := .}}{{if $i}} {{end}}{{$c.Name}}{{end}}' -- "$cur")
		return
	fi
	local flags= valued= files= dirs= args= argfiles= flagsfirst=
	case ${words[1]} in
{{- range .}}
	{{.Name}})
		flags='{{.Spellings}}'
		valued='{{.ValueSpellings ""}}'
		files='{{.ValueSpellings "FILE"}}'
		dirs='{{.ValueSpellings "DIR"}}'
		args='{{join .ArgWords " "}}' argfiles={{if .FileArgs}}1{{end}} flagsfirst={{if .FlagsFirst}}1{{end}}
		;;
{{- end}}
	*) return ;;
	esac

	# Walk to the cursor past each flag's value. -- ends the flags, and so
	# does the first argument of a command whose flags come first (exec:
	# the rest is the program's command line, in the guest).
	i=2
	while ((i < cword)); do
		w=${words[i]}
		if [[ $w == -- ]]; then
			flags=
			break
		elif [[ $w == -* ]]; then
			[[ " $valued " == *" $w "* ]] && i=$((i + 1))
		elif [[ -n $flagsfirst ]]; then
			return
		fi
		i=$((i + 1))
	done

	local flag= prefix=
	if ((i > cword)); then
		flag=${words[cword - 1]}
	elif [[ -n $flags && $cur == --*=* ]]; then
		flag=${cur%%=*} prefix=${cur%%=*}= cur=${cur#*=}
	elif [[ -n $flags && $cur == -* ]]; then
		_cork_reply "$lead" < <(compgen -W "$flags" -- "$cur")
		return
	fi
	local what=
	if [[ -n $flag ]]; then
		[[ " $files " == *" $flag "* ]] && what=-f
		[[ " $dirs " == *" $flag "* ]] && what=-d
	elif [[ -n $argfiles && $cur != :* ]]; then
		what=-f # :PATH is in the guest, out of reach
	elif [[ -n $args ]]; then
		_cork_reply "$lead" < <(compgen -W "$args" -- "$cur")
		return
	fi
	if [[ -n $what ]]; then
		compopt -o filenames 2>/dev/null
		_cork_reply "$lead" < <(compgen -P "$prefix" "$what" -- "$cur")
	fi
}

complete -F _cork cork
`))

var zshScript = template.Must(template.New("zsh").Funcs(completionFuncs).Parse(`#compdef cork
# zsh completion for cork, made by ` + "`cork completion zsh`" + ` from the flags
# cork itself parses. Load it in ~/.zshrc, after compinit, with
#     source <(cork completion zsh)
# or save it as _cork in a directory of your $fpath.

_cork() {
	local context state state_descr line
	typeset -A opt_args
	_arguments -C '1: :->command' '*:: :->argument'
	case $state in
	command)
		local -a commands=(
{{- range .}}
			'{{.Name}}:{{zshQuote .Summary ":"}}'
{{- end}}
		)
		_describe -t commands 'cork command' commands
		;;
	argument)
		case $words[1] in
{{- range .}}
		{{.Name}})
			_arguments -s -S{{if .FlagsFirst}} -A '-*'{{end}} \
				'(- *)--help[print the command'\''s flags and usage]' \
{{- range .Flags}}
				{{.Zsh}} \
{{- end}}
				{{if .FileArgs}}'*:file:_files'{{else if .ArgWords}}'1:{{join .ArgWords "|"}}:({{join .ArgWords " "}})'{{else}}'*: : '{{end}}
			;;
{{- end}}
		esac
		;;
	esac
}

if [[ $funcstack[1] == _cork ]]; then
	_cork "$@"
else
	compdef _cork cork
fi
`))

var fishScript = template.Must(template.New("fish").Funcs(completionFuncs).Parse(`# fish completion for cork, made by ` + "`cork completion fish`" + ` from the flags
# cork itself parses. Load it with
#     cork completion fish | source
# or save it as ~/.config/fish/completions/cork.fish.

# __cork_at CMD: the line is cork CMD ...; with no CMD, no command yet.
function __cork_at
	set -l words (commandline -opc)
	if set -q argv[1]
		test "$words[2]" = "$argv[1]"
	else
		test (count $words) -eq 1
	end
end

# __cork_before_args VALUED...: no argument yet after cork CMD; VALUED are
# the flags that take the next word as their value.
function __cork_before_args
	set -l words (commandline -opc)
	set -l i 3
	while test $i -le (count $words)
		if contains -- $words[$i] $argv
			set i (math $i + 1)
		else if not string match -q -- '-*' $words[$i]
			return 1
		end
		set i (math $i + 1)
	end
end

complete -c cork -f
{{- range .}}
complete -c cork -n __cork_at -a {{.Name}} -d {{fishQuote .Summary}}
{{- end}}
{{range .}}
{{- $when := printf "__cork_at %s" .Name}}
{{- if .FlagsFirst}}{{$when = printf "__cork_at %s; and __cork_before_args %s" .Name (.ValueSpellings "")}}{{end}}
complete -c cork -n {{fishQuote $when}} -l help -d 'print the command\'s flags and usage'
{{- range .Flags}}
complete -c cork -n {{fishQuote $when}} {{.Fish}}
{{- end}}
{{- if .FileArgs}}
complete -c cork -n '__cork_at {{.Name}}' -F
{{- else if .ArgWords}}
complete -c cork -n '__cork_at {{.Name}}' -a '{{join .ArgWords " "}}'
{{- end}}
{{end}}`))
