//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/corkvm/cork/protocol"
)

// badCopies are the malformed copies into the user's home that the copy
// attack sends in turn: each announces a file of one size and then does
// something else with its data, so that corkd meets each way a sender can
// lie about a file or give up on it.
var badCopies = []struct {
	name     string
	announce int64
	send     int
	end      func(p *peer) error // after the data; nil: cut the connection
}{
	{"short", 4096, 100, endFile},
	{"long", 100, 4096, endFile},
	{"cut", 1 << 20, 1000, nil},
	{"sender-gave-up", 4096, 100, func(p *peer) error {
		if err := p.send(protocol.TypeCopyEnd, &protocol.CopyEnd{Error: "file shrank"}); err != nil {
			return err
		}
		return p.send(protocol.TypeCopyDone, &protocol.CopyDone{Files: 1})
	}},
	{"wrong-frame", 4096, 100, func(p *peer) error {
		return p.send(protocol.TypeResize, protocol.EncodeResize(protocol.WindowSize{Cols: 80, Rows: 24}))
	}},
}

func endFile(p *peer) error {
	if err := p.send(protocol.TypeCopyEnd, &protocol.CopyEnd{}); err != nil {
		return err
	}
	return p.send(protocol.TypeCopyDone, &protocol.CopyDone{Files: 1})
}

func attackCopies(a attackArgs, t *tally) {
	for i := 0; i < a.n && !a.pastEnd(); i++ {
		bc := badCopies[i%len(badCopies)]
		began := time.Now()
		answer, err := badCopy(a, fmt.Sprintf("chaos-%d", i), bc.announce, bc.send, bc.end)
		t.took("copy", time.Since(began))
		if err != nil {
			t.fail("copy "+bc.name, err)
			continue
		}
		t.add("copy "+bc.name+": "+answer, 1)
	}
}

// badCopy sends one malformed copy and returns how corkd answered.
func badCopy(a attackArgs, name string, announce int64, send int, end func(*peer) error) (string, error) {
	p, err := dialHello(a.sock)
	if err != nil {
		return "", err
	}
	defer p.close()
	if err := p.send(protocol.TypeCopyIn, &protocol.CopyIn{Dest: []byte(a.home), Sources: 1}); err != nil {
		return "", err
	}
	root, err := protocol.EncodeEntry(&protocol.Entry{Kind: protocol.EntryFile, Mode: 0o644, ModTime: time.Now(), Size: announce, Path: []byte(name)})
	if err != nil {
		return "", err
	}
	if err := p.send(protocol.TypeCopyRoot, root); err != nil {
		return "", err
	}
	if err := p.send(protocol.TypeCopyData, make([]byte, send)); err != nil {
		return "refused mid-data", nil
	}
	if end == nil {
		return "cut", nil
	}
	if err := end(p); err != nil {
		return "refused before the end", nil
	}
	return copyAnswer(p)
}

// copyAnswer reads corkd's answer to a copy: its CopyDone, an Error, or
// the end of the connection.
func copyAnswer(p *peer) (string, error) {
	p.conn.SetReadDeadline(time.Now().Add(opTimeout))
	for {
		t, _, err := p.r.Next()
		switch {
		case errTimeout(err):
			return "", fmt.Errorf("no answer within %v", opTimeout)
		case err != nil:
			return "closed", nil
		case t == protocol.TypeCopyDone:
			return "done", nil
		case t == protocol.TypeError:
			return "error", nil
		}
	}
}

// tempFilesUnder counts the temporary files copies left under dir.
func tempFilesUnder(dir string) int {
	n := 0
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".cork-cp-") {
			n++
		}
		return nil
	})
	return n
}
