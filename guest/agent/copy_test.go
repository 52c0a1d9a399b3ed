package agent_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corkvm/cork/guest/agent"
	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/prototest"
)

// TestMalformedCopyInsLeaveNothing: copies whose data does not match the
// sizes they announce, each answered with an error, leave the agent no
// more fds than before and no temporary file, however many come.
func TestMalformedCopyInsLeaveNothing(t *testing.T) {
	srv := newServer(t, agent.Config{})
	dest := t.TempDir()
	entry := func(e protocol.Entry) []byte {
		b, err := protocol.EncodeEntry(&e)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	copyIn := func(data []byte, end bool) {
		p := prototest.NewPeer(t, connect(t, srv))
		p.Hello()
		p.Send(protocol.TypeCopyIn, &protocol.CopyIn{Dest: []byte(dest), Sources: 1})
		p.Send(protocol.TypeCopyRoot, entry(protocol.Entry{Kind: protocol.EntryDir, Mode: 0o755, Path: []byte("t")}))
		p.Send(protocol.TypeCopyEntry, entry(protocol.Entry{Kind: protocol.EntryFile, Mode: 0o644, Size: 10, Path: []byte("f")}))
		p.Send(protocol.TypeCopyData, data)
		if end {
			p.Send(protocol.TypeCopyEnd, &protocol.CopyEnd{})
		}
		p.ExpectError(protocol.KindProtocol, "file")
		p.Conn.Close()
	}
	copyIn(make([]byte, 20), false) // the agent's first copy may open what it keeps
	before := prototest.OpenFds(t)
	for range 50 {
		copyIn(make([]byte, 20), false) // more than the file's size
		copyIn(make([]byte, 5), true)   // less
	}
	waitFor(t, "the agent's fds to be back where they were", 10*time.Second, func() bool { return prototest.OpenFds(t) <= before })
	filepath.Walk(dest, func(p string, fi os.FileInfo, err error) error {
		if err == nil && strings.HasPrefix(fi.Name(), ".cork-cp-") {
			t.Errorf("temporary file left: %s", p)
		}
		return nil
	})
}

// TestCopyProblemsToAStalledClient: a client that sends a copy in and
// reads none of the problems it causes is cut off after the stall every
// write to a client has, and the copy ends; it does not hold the agent.
func TestCopyProblemsToAStalledClient(t *testing.T) {
	agent.SetClientStall(t, 300*time.Millisecond)
	srv := newServer(t, agent.Config{})
	conn := connectPipe(t, srv) // a write that waits for the agent to read it
	p := prototest.NewPeer(t, conn)
	p.Hello()
	p.Send(protocol.TypeCopyIn, &protocol.CopyIn{Dest: []byte(t.TempDir()), Sources: 1})
	root, _ := protocol.EncodeEntry(&protocol.Entry{Kind: protocol.EntryDir, Mode: 0o755, Path: []byte("t")})
	link, _ := protocol.EncodeEntry(&protocol.Entry{Kind: protocol.EntryHardlink, Path: []byte("h"), Link: []byte("nothing")})
	p.Send(protocol.TypeCopyRoot, root)
	p.Send(protocol.TypeCopyEntry, link) // a problem the agent tells, which this client never reads
	cut := make(chan error, 1)
	go func() {
		// Taken only once the agent reads again, or fails once it has
		// cut the connection.
		_, err := conn.Write(make([]byte, protocol.HeaderSize))
		cut <- err
	}()
	select {
	case err := <-cut:
		if err == nil {
			t.Fatal("the agent read on while its problem was not read")
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the agent still waits on a client that does not read")
	}
}
