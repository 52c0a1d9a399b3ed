package protocol

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// The protocol versions this package speaks. Version 2 adds kept
// sessions (CapKeep); a version-1 peer runs plain sessions with a
// version-2 one.
const (
	MinVersion = 1
	MaxVersion = 2
)

// A corkd binary carries its version between StampMarker and StampEnd,
// set at build time with -ldflags "-X main.stamp=corkd-version:VERSION;",
// so that cork bake can read it from a binary built for another
// architecture without running it. The Makefile's build line writes it.
const (
	StampMarker = "corkd-version:"
	StampEnd    = ";"
)

// Stamp returns the stamp that carries version.
func Stamp(version string) string { return StampMarker + version + StampEnd }

// DefaultVsockPort is the vsock port corkd listens on and cork dials when
// an address names none: "cork" on a phone keypad.
const DefaultVsockPort = 2675

// Limits on an Exec request, beyond the frame size.
const (
	MaxArgs = 4096 // argv entries
	MaxEnv  = 4096 // env entries
)

// Capabilities a peer may announce in Hello.
const (
	CapTTY    = "tty"    // PTY sessions with Resize
	CapPipes  = "pipes"  // pipe sessions with separate stderr
	CapSignal = "signal" // Signal frames
	CapPing   = "ping"   // Ping and Pong
	CapKeep   = "keep"   // kept sessions: Exec.Keep, Attach, List, Kill, Remove (version 2)
)

// Hello opens a connection in each direction.
type Hello struct {
	MinVersion   int      `json:"min_version"`
	MaxVersion   int      `json:"max_version"`
	Version      int      `json:"version,omitempty"` // the guest's choice, in its reply
	Capabilities []string `json:"capabilities,omitempty"`
	Software     string   `json:"software,omitempty"` // for example "corkd 0.1.0"
}

// Negotiate returns the highest version both h and the range lo..hi speak,
// or an Error of kind "version" naming both ranges.
func Negotiate(h Hello, lo, hi int) (int, error) {
	v := min(h.MaxVersion, hi)
	if v < max(h.MinVersion, lo) {
		return 0, &Error{Kind: KindVersion, Message: fmt.Sprintf(
			"protocol version mismatch: peer speaks %s, this side speaks %s",
			versionRange(h.MinVersion, h.MaxVersion), versionRange(lo, hi))}
	}
	return v, nil
}

func versionRange(lo, hi int) string {
	if lo == hi {
		return fmt.Sprintf("version %d", lo)
	}
	return fmt.Sprintf("versions %d to %d", lo, hi)
}

// WindowSize is a terminal size in characters and pixels.
type WindowSize struct {
	Cols   uint16 `json:"cols"`
	Rows   uint16 `json:"rows"`
	XPixel uint16 `json:"xpixel,omitempty"`
	YPixel uint16 `json:"ypixel,omitempty"`
}

// MaxWindowDim is the most columns or rows a guest applies; larger values
// are clamped to it. No real terminal is larger, and a program that
// allocates a cell per position would need 4 G cells for 65535x65535.
const MaxWindowDim = 4096

// Valid reports whether s has both a width and a height. A zero size is
// not a terminal size: a guest ignores such a Resize.
func (s WindowSize) Valid() bool { return s.Cols > 0 && s.Rows > 0 }

// Clamped returns s with its columns and rows limited to MaxWindowDim.
func (s WindowSize) Clamped() WindowSize {
	s.Cols, s.Rows = min(s.Cols, MaxWindowDim), min(s.Rows, MaxWindowDim)
	return s
}

func (s WindowSize) String() string { return fmt.Sprintf("%dx%d", s.Cols, s.Rows) }

// Exec asks the guest to start a program.
type Exec struct {
	Argv  []string   `json:"argv"`
	Env   []string   `json:"env,omitempty"`  // KEY=VALUE, applied over the user's defaults
	User  string     `json:"user,omitempty"` // a name or a numeric uid; empty: the agent's own user
	Dir   string     `json:"dir,omitempty"`  // empty: the user's home when it exists, else /
	TTY   bool       `json:"tty"`
	Stdin bool       `json:"stdin"`          // false: the program's stdin is empty (pipes) or never written (PTY)
	Term  string     `json:"term,omitempty"` // TERM for PTY sessions; empty: the guest's default
	Size  WindowSize `json:"size"`           // PTY size at creation
	// Modes are the host terminal's modes for the PTY, by the mnemonics
	// of RFC 4254 section 8 and IUTF8 (RFC 8160): "VERASE": 127,
	// "IUTF8": 1. A guest applies those it knows before the program
	// starts and ignores the rest; without them the PTY has the guest
	// kernel's defaults.
	Modes map[string]uint32 `json:"modes,omitempty"`

	// Version 2, kept sessions (TTY only): the session outlives its
	// connection, named Name (unique per agent; empty: known by its id),
	// hung up after LingerSeconds detached or gone LingerSeconds after
	// exiting while detached (0: the agent's default; negative: never).
	Keep          bool   `json:"keep,omitempty"`
	Name          string `json:"name,omitempty"`
	LingerSeconds int64  `json:"linger_seconds,omitempty"`
	// Terminal names the host terminal the session is shown on, as
	// Attach.Terminal does.
	Terminal string `json:"terminal,omitempty"`
	// AttachExisting (with Keep and Name) attaches to the peer's session
	// of that name when there is one, as Attach does, answered with
	// Attached instead of Started, and starts the program otherwise: one
	// request, so that two of them for one name make one session.
	AttachExisting bool `json:"attach_existing,omitempty"`
}

// MaxModes bounds Exec.Modes; RFC 4254 names fewer than 60 modes.
const MaxModes = 128

// Validate reports the first problem with e, naming it.
func (e *Exec) Validate() error {
	if len(e.Argv) == 0 || e.Argv[0] == "" {
		return errors.New("exec: empty argv: no program to run")
	}
	if len(e.Argv) > MaxArgs {
		return fmt.Errorf("exec: %d arguments, the limit is %d", len(e.Argv), MaxArgs)
	}
	if len(e.Env) > MaxEnv {
		return fmt.Errorf("exec: %d environment entries, the limit is %d", len(e.Env), MaxEnv)
	}
	for i, a := range e.Argv {
		if strings.IndexByte(a, 0) >= 0 {
			return fmt.Errorf("exec: argument %d contains a NUL byte", i)
		}
	}
	for i, kv := range e.Env {
		if strings.IndexByte(kv, 0) >= 0 {
			return fmt.Errorf("exec: environment entry %d contains a NUL byte", i)
		}
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			// The entry itself is not quoted: it may be a secret.
			return fmt.Errorf("exec: environment entry %d is not KEY=VALUE", i)
		}
	}
	if err := validTerminal(e.Terminal); err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	if len(e.Modes) > MaxModes {
		return fmt.Errorf("exec: %d terminal modes, the limit is %d", len(e.Modes), MaxModes)
	}
	if e.Keep && !e.TTY {
		return errors.New("exec: a kept session needs a terminal (tty): its screen is what a later attach shows")
	}
	if e.Name != "" || e.Keep {
		if err := ValidName(e.Name); err != nil {
			return fmt.Errorf("exec: %w", err)
		}
	}
	if e.AttachExisting && (!e.Keep || e.Name == "") {
		return errors.New("exec: attach_existing needs a kept session with a name to find")
	}
	for name, s := range map[string]string{"user": e.User, "dir": e.Dir, "term": e.Term} {
		if strings.IndexByte(s, 0) >= 0 {
			return fmt.Errorf("exec: %s contains a NUL byte", name)
		}
	}
	return nil
}

// Started tells the host that the program runs.
type Started struct {
	Session     string `json:"session"` // the session's id, for a later attach to a kept one
	PID         int    `json:"pid"`
	StdinWindow uint32 `json:"stdin_window"` // stdin bytes the host may have unacknowledged
	Kept        bool   `json:"kept,omitempty"`
	Name        string `json:"name,omitempty"`
	// Holder numbers this client's hold on a kept session, for a resume
	// (Attach.Holder).
	Holder uint64 `json:"holder,omitempty"`
}

// Signal asks the guest to send a signal to the program.
type Signal struct {
	Name string `json:"name"` // without the SIG prefix: "TERM"
}

// Signals lists the signal names a guest forwards. Others (SIGCHLD, SIGPIPE,
// SIGURG, SIGWINCH, ...) belong to the runtime or the protocol, not the user.
var Signals = []string{"HUP", "INT", "QUIT", "KILL", "USR1", "USR2", "TERM", "ALRM", "CONT", "STOP", "TSTP", "TTIN", "TTOU"}

// Exit is a session's last frame: how the program ended.
type Exit struct {
	Code       int    `json:"code"`             // exit status, or 128+N for signal N
	Signal     string `json:"signal,omitempty"` // the killing signal's name, without SIG
	CoreDumped bool   `json:"core_dumped,omitempty"`
}

// Error kinds.
const (
	KindVersion  = "version"  // no common protocol version
	KindProtocol = "protocol" // a malformed or unexpected frame
	KindRequest  = "request"  // a malformed Exec
	KindUser     = "user"     // unknown user, or a switch the agent cannot make
	KindWorkdir  = "workdir"  // the working directory is missing or not usable
	KindStart    = "start"    // the program could not be started for another reason
	KindBusy     = "busy"     // the agent is at its session limit
	KindSession  = "session"  // no such kept session (or not the peer's), or a name already taken
	KindKeep     = "keep"     // the agent cannot keep sessions (it speaks protocol version 1)
)

// Error is the guest's account of why a session could not go on. It is the
// last frame of a session.
type Error struct {
	Kind    string `json:"kind"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

// Decode unmarshals a JSON payload of frame type t into v, naming the frame
// in any error.
func Decode(t Type, p []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(p))
	if err := d.Decode(v); err != nil {
		return fmt.Errorf("protocol: bad %s payload: %v", t, err)
	}
	if d.More() {
		return fmt.Errorf("protocol: bad %s payload: data after the JSON object", t)
	}
	return nil
}

// MustJSON encodes a message that cannot fail to encode (one of this
// package's types).
func MustJSON(v any) []byte {
	p, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return p
}

func encodeJSON(v any) ([]byte, error) {
	return json.Marshal(v)
}

// EncodeResize returns a Resize payload.
func EncodeResize(s WindowSize) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint16(b[0:], s.Cols)
	binary.BigEndian.PutUint16(b[2:], s.Rows)
	binary.BigEndian.PutUint16(b[4:], s.XPixel)
	binary.BigEndian.PutUint16(b[6:], s.YPixel)
	return b
}

// DecodeResize parses a Resize payload.
func DecodeResize(p []byte) (WindowSize, error) {
	if len(p) != 8 {
		return WindowSize{}, fmt.Errorf("protocol: resize payload has %d bytes, want 8", len(p))
	}
	return WindowSize{
		Cols:   binary.BigEndian.Uint16(p[0:]),
		Rows:   binary.BigEndian.Uint16(p[2:]),
		XPixel: binary.BigEndian.Uint16(p[4:]),
		YPixel: binary.BigEndian.Uint16(p[6:]),
	}, nil
}

// EncodeStdinAck returns a StdinAck payload acknowledging n bytes.
func EncodeStdinAck(n uint32) []byte {
	return binary.BigEndian.AppendUint32(nil, n)
}

// DecodeStdinAck parses a StdinAck payload.
func DecodeStdinAck(p []byte) (uint32, error) {
	if len(p) != 4 {
		return 0, fmt.Errorf("protocol: stdin-ack payload has %d bytes, want 4", len(p))
	}
	return binary.BigEndian.Uint32(p), nil
}
