package protocol

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Kept sessions (protocol version 2, capability CapKeep) outlive their
// connection: see the package documentation for the exchange.

// MaxName bounds a kept session's name.
const MaxName = 64

// MaxRef bounds how a request names a kept session: an id, a name, or
// OWNER/NAME, OWNER being a user name or a uid.
const MaxRef = 2*MaxName + 1

// isSessionID reports whether s has the form of the ids an agent gives
// sessions: 16 lowercase hex digits.
func isSessionID(s string) bool {
	return len(s) == 16 && strings.Trim(s, "0123456789abcdef") == ""
}

// ValidName reports what is wrong with a kept session's name, if
// anything. Empty is allowed: the session is known by its id.
func ValidName(name string) error {
	switch {
	case len(name) > MaxName:
		return fmt.Errorf("session name of %d bytes, the limit is %d", len(name), MaxName)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("session name %q holds a slash or a NUL", name)
	case strings.IndexFunc(name, func(r rune) bool { return r < ' ' || r == 0x7f }) >= 0:
		return fmt.Errorf("session name %q holds a control character", name)
	case isSessionID(name):
		return fmt.Errorf("session name %q looks like a session id (16 hex digits)", name)
	}
	return nil
}

// Attach asks for a kept session: to drive it (the output from where the
// host left off, or a redraw) until it exits or the connection drops.
type Attach struct {
	Session string `json:"session"` // an id, a name, or OWNER/NAME (another uid's)
	// Resume, when set, is the number of the session's output bytes the
	// host has already seen: the agent sends the rest, if it still holds
	// them, and redraws otherwise.
	Resume *uint64    `json:"resume,omitempty"`
	Size   WindowSize `json:"size"` // the host terminal's size; zero: leave the session's
	// Holder, with Resume, is the number Started or Attached gave the
	// client's hold on the session: when another client has attached
	// since, the session was taken over, and the answer is Detached, not
	// a resume. Zero: not known (the session is taken over as by a new
	// attach).
	Holder uint64 `json:"holder,omitempty"`
	// Attempt, with Holder, numbers the client's resumes: one more on
	// each. A resume that repeats the one its client may not have heard
	// back from is refused when its Attempt is not above that one's: it
	// is an older try the guest read late, from a connection the client
	// has left. Zero: not numbered (any repeat is taken).
	Attempt uint64 `json:"attempt,omitempty"`
	// ReadOnly makes the client a watcher: it gets the screen as it
	// changes, drawn for its own size (Size, then its Resize frames), sends
	// no input and never sizes the session. Several may watch a session
	// besides the one client that drives it.
	ReadOnly bool `json:"read_only,omitempty"`
	// Terminal, when set, names the host terminal the client shows the
	// session on: an opaque token (at most MaxTerminal printable ASCII
	// bytes) that stays the same for one terminal's life and differs
	// between terminals. When the terminal of the last client to drive the
	// session attaches again and the program has written nothing since
	// that client left, the Restore leaves out the lines scrolled off the
	// screen: the terminal already holds them.
	Terminal string `json:"terminal,omitempty"`
}

// MaxTerminal bounds Attach.Terminal and Exec.Terminal.
const MaxTerminal = 64

// Validate reports the first problem with a.
func (a *Attach) Validate() error {
	if a.Session == "" {
		return errors.New("attach: no session named")
	}
	if len(a.Session) > MaxRef || strings.ContainsRune(a.Session, 0) {
		return fmt.Errorf("attach: session %q is not a name or an id", a.Session)
	}
	if err := validTerminal(a.Terminal); err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	return nil
}

func validTerminal(t string) error {
	if len(t) > MaxTerminal {
		return fmt.Errorf("terminal token of %d bytes, the limit is %d", len(t), MaxTerminal)
	}
	for i := 0; i < len(t); i++ {
		if t[i] <= ' ' || t[i] >= 0x7f {
			return errors.New("terminal token has a byte that is not printable ASCII")
		}
	}
	return nil
}

// Attached answers Attach. The output frames that follow continue the
// session's output from byte From (counting from the session's start): the
// sequence number of an output frame's first byte is From plus the output
// bytes before it on this connection.
type Attached struct {
	Session     string `json:"session"` // the id
	Name        string `json:"name,omitempty"`
	From        uint64 `json:"from"`
	Resumed     bool   `json:"resumed,omitempty"` // From is the Resume asked for: nothing was lost
	Running     bool   `json:"running"`           // false: the program has exited; its kept screen and Exit follow
	StdinWindow uint32 `json:"stdin_window"`
	ReadOnly    bool   `json:"read_only,omitempty"` // the client watches
	Holder      uint64 `json:"holder,omitempty"`    // this client's hold, for a resume (Attach.Holder)
}

// Detached is the last frame of a connection whose session another client
// took over by attaching to it.
type Detached struct {
	Reason string `json:"reason"`
}

// Session states in SessionInfo.
const (
	StateRunning = "running"
	StateExited  = "exited"
)

// SessionInfo describes one kept session in a Sessions frame. It never
// holds the program's arguments or environment, which may hold secrets.
type SessionInfo struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
	// Owner is the user who started the session, whose names its name
	// is among: another uid's is OWNER/NAME.
	Owner    string     `json:"owner,omitempty"`
	User     string     `json:"user"`
	Program  string     `json:"program"` // argv[0] only
	Started  time.Time  `json:"started"`
	State    string     `json:"state"`
	Attached bool       `json:"attached"`
	Watchers int        `json:"watchers,omitempty"`
	Exit     *Exit      `json:"exit,omitempty"`
	Size     WindowSize `json:"size"`
	// DetachedSince is when the last client left the session: for one
	// that exited while detached, when it was detached, not when it
	// exited.
	DetachedSince *time.Time `json:"detached_since,omitempty"`
}

// Sessions answers List: the kept sessions the peer may see.
type Sessions struct {
	Sessions []SessionInfo `json:"sessions"`
}

// Kill asks the agent to signal a kept session's programs: Signal (a name
// of Signals), or, when empty, a hang-up (SIGHUP, then SIGKILL after the
// agent's grace period).
type Kill struct {
	Session string `json:"session"`
	Signal  string `json:"signal,omitempty"`
}

// Remove asks the agent to forget an exited kept session.
type Remove struct {
	Session string `json:"session"`
}

// Peek asks for a kept session's screen, without attaching to it: it never
// sizes the session nor sends it input.
type Peek struct {
	Session string `json:"session"`
	ANSI    bool   `json:"ansi,omitempty"` // lines with colours and styles as escape sequences
}

// Snapshot answers Peek: the session's screen as the agent keeps it.
type Snapshot struct {
	Session       string   `json:"session"`
	Name          string   `json:"name,omitempty"`
	Cols          int      `json:"cols"`
	Rows          int      `json:"rows"`
	Lines         []string `json:"lines"` // Rows lines, trailing spaces cut
	CursorCol     int      `json:"cursor_col"`
	CursorRow     int      `json:"cursor_row"`
	CursorVisible bool     `json:"cursor_visible"`
	AltScreen     bool     `json:"alt_screen"`
	Running       bool     `json:"running"`
}

// Done answers Kill and Remove.
type Done struct {
	Message string `json:"message"`
}
