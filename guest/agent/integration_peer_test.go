package agent_test

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/corkvm/cork/guest/agent"
	"github.com/corkvm/cork/protocol"
)

// Peers confined to their own uid (--allow-uid), for real: these tests
// run sessions as other users, and make some, so they need root.

// aliasedUser makes a user and a second passwd entry for its uid, as an
// image may have, with gid 0 and the shadow group: what a peer confined to
// that uid must not be able to pick. It returns the uid, the user's name
// and the alias's; both entries are removed again.
func aliasedUser(t *testing.T) (uid uint32, name, alias string) {
	t.Helper()
	requireRoot(t)
	if _, err := exec.LookPath("useradd"); err != nil {
		t.Skip("no useradd")
	}
	suffix := strconv.Itoa(os.Getpid()%10000) + strconv.Itoa(int(time.Now().UnixNano()%1000))
	name, alias = "corkc"+suffix, "corka"+suffix
	mustRun(t, "useradd", "-M", "-d", "/", "-s", "/bin/sh", name)
	t.Cleanup(func() { exec.Command("userdel", name).Run() })
	out, err := exec.Command("id", "-u", name).Output()
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.ParseUint(strings.TrimSpace(string(out)), 10, 32)
	groups := "0"
	if exec.Command("getent", "group", "shadow").Run() == nil {
		groups = "shadow"
	}
	// -o: a second entry with a uid that is already taken. It comes after
	// the user's own, which stays the uid's first entry.
	mustRun(t, "useradd", "-o", "-u", strconv.FormatUint(n, 10), "-g", "0", "-G", groups, "-M", "-d", "/", "-N", alias)
	t.Cleanup(func() { exec.Command("userdel", alias).Run() })
	return uint32(n), name, alias
}

// TestConfinedPeerRunsOnlyAsItsFirstEntry: a peer admitted with --allow-uid
// names another passwd entry of its own uid, one with root's group and
// shadow: refused, for an exec and for a copy; naming nothing, its name
// or its uid runs as the uid's first entry with that entry's groups.
func TestConfinedPeerRunsOnlyAsItsFirstEntry(t *testing.T) {
	uid, name, alias := aliasedUser(t)
	srv := newServer(t, agent.Config{})

	p := dial(t, srv, int(uid))
	p.Send(protocol.TypeExec, &protocol.Exec{User: alias, Argv: sh(`id -G; cat /etc/shadow`)})
	p.ExpectError(protocol.KindUser, "its own passwd entry \""+name+"\"")

	p = dial(t, srv, int(uid))
	p.Send(protocol.TypeCopyOut, &protocol.CopyOut{User: alias, Paths: [][]byte{[]byte("/etc/shadow")}})
	p.ExpectError(protocol.KindUser, "not as user \""+alias+"\"")

	for _, user := range []string{"", name, strconv.Itoa(int(uid))} {
		p = dial(t, srv, int(uid))
		p.Exec(protocol.Exec{User: user, Argv: sh(`echo "$(id -u) $(id -G) $USER"`)})
		out := string(p.Expect(protocol.TypeStdout))
		if want := strconv.Itoa(int(uid)); !strings.HasPrefix(out, want+" ") || strings.Contains(out, " 0 ") ||
			!strings.HasSuffix(strings.TrimSpace(out), " "+name) {
			t.Errorf("user %q: %q; want uid %s as %s, without group 0", user, out, want, name)
		}
	}
}

// TestSessionsPerConfinedUID: a uid admitted to run only as itself gets at
// most MaxSessionsPerUID sessions at once, a kept one that runs detached
// included, and the next is refused naming the flag, while root still
// gets sessions; a session that ends gives its place back. Such a uid
// could take every session of the agent before.
func TestSessionsPerConfinedUID(t *testing.T) {
	requireRoot(t)
	srv := newServer(t, agent.Config{MaxSessionsPerUID: 2, DisconnectGrace: 100 * time.Millisecond})
	t.Cleanup(func() { srv.Shutdown(time.Second) }) // the kept session too
	const nobody = 65534
	kept := dial(t, srv, nobody)
	kept.Exec(keep("nobody-kept", "sleep", "600"))
	kept.Conn.Close() // detached, still running
	plain := dial(t, srv, nobody)
	plain.Exec(protocol.Exec{Argv: []string{"sleep", "600"}})

	refused := dial(t, srv, nobody)
	refused.Send(protocol.TypeExec, &protocol.Exec{Argv: []string{"true"}})
	refused.ExpectError(protocol.KindBusy, "uid 65534 already has 2 sessions")
	root := dial(t, srv, 0)
	root.Exec(protocol.Exec{Argv: []string{"true"}})
	if _, _, exit := root.Output(nil); exit.Code != 0 {
		t.Fatalf("root's session beside a confined uid at its limit: %+v", exit)
	}

	plain.Conn.Close() // hung up: its place is free once it has ended
	waitFor(t, "the confined uid's place to come back", 10*time.Second, func() bool {
		p := dial(t, srv, nobody)
		p.Send(protocol.TypeExec, &protocol.Exec{Argv: []string{"true"}})
		typ, _, err := p.R.Next()
		return err == nil && typ == protocol.TypeStarted
	})
}
