//go:build linux

package e2e

import (
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/prototest"
)

// Text that came from the agent reaches the operator's terminal with its
// control characters escaped: a guest must not drive the host's terminal
// through an error message, a session's name, program or user, or its
// software's name. A made-up agent says all of these with escape
// sequences in them.

// hostile is a string an agent might send to clear the host's screen,
// set its title and ring its bell.
const hostile = "x\x1b[2J\x1b]0;pwned\x07\u009b1m"

// lyingAgent answers every connection on a unix socket with a hello whose
// software is hostile, then answers the request's type with answer.
func lyingAgent(t *testing.T, answer func(protocol.Type, *protocol.Writer)) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "liar.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	prototest.Serve(t, l, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		r, w := protocol.NewReader(c), protocol.NewWriter(c)
		if t, _, err := r.Next(); err != nil || t != protocol.TypeHello {
			return
		}
		w.WriteJSON(protocol.TypeHello, &protocol.Hello{MinVersion: 1, MaxVersion: 2, Version: 2, Software: "corkd " + hostile})
		rt, _, err := r.Next()
		if err != nil {
			return
		}
		answer(rt, w)
		// Wait for cork to hang up: it reads the answer first.
		for {
			if _, _, err := r.Next(); err != nil {
				return
			}
		}
	})
	return "unix://" + sock
}

func TestAgentTextEscaped(t *testing.T) {
	url := lyingAgent(t, func(rt protocol.Type, w *protocol.Writer) {
		switch rt {
		case protocol.TypeExec:
			w.WriteJSON(protocol.TypeError, &protocol.Error{Kind: protocol.KindStart, Message: "cannot start " + hostile})
		case protocol.TypeAttach:
			w.WriteJSON(protocol.TypeAttached, &protocol.Attached{Session: "0123456789abcdef", Name: "name" + hostile, Running: true, StdinWindow: 1 << 16})
			w.WriteJSON(protocol.TypeDetached, &protocol.Detached{Reason: "taken " + hostile})
		case protocol.TypeList:
			w.WriteJSON(protocol.TypeSessions, &protocol.Sessions{Sessions: []protocol.SessionInfo{{
				ID: "id" + hostile, Name: "name" + hostile, User: "user" + hostile, Program: "prog" + hostile,
				Started: time.Now(), State: protocol.StateExited, Exit: &protocol.Exit{Code: 137, Signal: "KILL" + hostile},
			}}})
		case protocol.TypePeek:
			w.WriteJSON(protocol.TypeSnapshot, &protocol.Snapshot{Session: "id", Cols: 80, Rows: 1, Lines: []string{"screen" + hostile}})
		case protocol.TypePing:
			w.WriteFrame(protocol.TypePong, []byte("0"))
		}
	})
	for _, tc := range []struct {
		name string
		args []string
		want []string // escaped forms that must show
	}{
		{"exec error", []string{"exec", "--connect", url, "--", "true"}, []string{`cannot start x\x1b[2J\x1b]0;pwned\a\u009b1m`}},
		{"takeover reason and name", []string{"attach", "--connect", url, "s"}, []string{`taken x\x1b[2J`, `name` + `x\x1b[2J`}},
		{"ls columns", []string{"ls", "--connect", url}, []string{`idx\x1b[2J`, `namex\x1b[2J`, `userx\x1b[2J`, `progx\x1b[2J`, `SIGKILLx\x1b[2J`}},
		{"peek text", []string{"peek", "--connect", url, "s"}, []string{`screenx\x1b[2J`}},
		{"ls json", []string{"ls", "--json", "--connect", url}, []string{`progx\u001b[2J\u001b]0;pwned\u0007\u009b1m`}},
		{"peek json", []string{"peek", "--json", "--connect", url, "s"}, []string{`screenx\u001b[2J`, `\u009b1m`}},
		{"ping software", []string{"ping", "-c", "1", "--connect", url}, []string{`corkd x\x1b[2J`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(bin.Cork, tc.args...)
			out, _ := cmd.CombinedOutput()
			if strings.ContainsAny(string(out), "\x1b\x07\u009b") {
				t.Errorf("cork %s printed the agent's control characters: %q", tc.args[0], out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("cork %s: %q lacks %q", tc.args[0], out, w)
				}
			}
		})
	}
}
