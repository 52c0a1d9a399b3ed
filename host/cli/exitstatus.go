package cli

import (
	"errors"
	"fmt"
	"os"

	"github.com/corkvm/cork/host/client"
	"github.com/corkvm/cork/protocol"
)

// cork's exit status is the program's for cork exec and cork attach.
// Where cork, not the program, decides it, it is one of these, as
// docker's: 125 when cork itself fails, 255 when the session's outcome is
// unknown. cork bake stopped by signal N exits 128+N, as a shell reports
// a program that signal N ended.
const (
	ExitCorkError = 125
	ExitLost      = 255
	// ExitTakenOver: another client attached to the kept session.
	ExitTakenOver = 254
	// ExitCopyProblems: cork cp left something not copied.
	ExitCopyProblems = 1
)

// outcome is how a session on the operator's terminal ended.
type outcome struct {
	sess      *client.Session
	keep      bool
	exit      protocol.Exit
	err       error  // Run's
	transport error  // the transport's own failure (smolvm's), if any
	again     string // the command that attaches to the session again
}

// exitStatus is cork's exit status for a session that ended as o says:
// the program's when it exited, else one of cork's own, with a line on
// stderr that says why.
func exitStatus(o outcome) int {
	var taken *client.TakenOverError
	switch {
	case o.err == nil:
		if o.keep {
			fmt.Fprintln(os.Stderr, exitedLine(o.exit))
		}
		return o.exit.Code
	case errors.Is(o.err, client.ErrDetached):
		say("detached from session %s; %s to return", describe(o.sess), o.again)
		return 0
	case errors.As(o.err, &taken):
		say("%v; %s to take it back", o.err, o.again)
		return ExitTakenOver
	case errors.Is(o.err, client.ErrNoExit):
		msg := o.err.Error()
		if o.transport != nil {
			msg += " (" + o.transport.Error() + ")"
		}
		if o.keep && o.sess.ID != "" {
			msg += fmt.Sprintf("; session %s is kept: %s", describe(o.sess), o.again)
		}
		say("%s", msg)
		return ExitLost
	}
	if o.transport != nil {
		return fail("%v (%v)", o.err, o.transport)
	}
	return fail("%v", o.err)
}

// exitedLine is what cork prints when a kept session's program exits
// while it is attached, as tmux prints [exited]: the session is over, not
// detached.
func exitedLine(e protocol.Exit) string {
	if e.Signal != "" {
		return fmt.Sprintf("[exited %d (SIG%s)]", e.Code, e.Signal)
	}
	return fmt.Sprintf("[exited %d]", e.Code)
}

// sessionRef is how a message names a kept session to attach to.
func sessionRef(s *client.Session) string {
	if s.Name != "" {
		return s.Name
	}
	if s.ID != "" || s.Attach == nil {
		return s.ID
	}
	return s.Attach.Session
}

func describe(s *client.Session) string {
	if s.Name != "" {
		return fmt.Sprintf("%s (id %s)", s.Name, s.ID)
	}
	return s.ID
}
