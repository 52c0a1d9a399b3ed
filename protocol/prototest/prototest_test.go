package prototest

import (
	"bytes"
	"net"
	"testing"

	"github.com/corkvm/cork/protocol"
)

func TestFrameAndHeader(t *testing.T) {
	f := Frame(protocol.TypeSignal, &protocol.Signal{Name: "TERM"})
	typ, p, err := protocol.NewReader(bytes.NewReader(f)).Next()
	if err != nil || typ != protocol.TypeSignal || string(p) != `{"name":"TERM"}` {
		t.Fatalf("frame read back as %s %q %v", typ, p, err)
	}
	if h := Header(protocol.TypeStdin, 1<<31); !bytes.Equal(h, []byte{0x10, 0x80, 0, 0, 0}) {
		t.Fatalf("header %x", h)
	}
}

func TestPeerOutputSkipsToExit(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	go func() {
		w := protocol.NewWriter(b)
		w.WriteFrame(protocol.TypeStdout, []byte("out"))
		w.WriteFrame(protocol.TypeStdinAck, protocol.EncodeStdinAck(3))
		w.WriteFrame(protocol.TypeStderr, []byte("err"))
		w.WriteJSON(protocol.TypeExit, &protocol.Exit{Code: 4})
		b.Close()
	}()
	var seen []string
	stdout, stderr, exit := NewPeer(t, a).Output(func(s string) { seen = append(seen, s) })
	if stdout != "out" || stderr != "err" || exit.Code != 4 || len(seen) != 2 {
		t.Fatalf("stdout %q stderr %q exit %+v, each saw %q", stdout, stderr, exit, seen)
	}
}
