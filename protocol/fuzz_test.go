package protocol

import (
	"bytes"
	"encoding/json"
	"testing"
)

// Each message decoder is fuzzed: it must never panic, and whatever it
// accepts must survive a round trip through its encoder. Seeds live in
// testdata/fuzz; `make fuzz` runs each target for a while.

func fuzzJSON[T any](f *testing.F, t Type, seeds ...T) {
	for _, s := range seeds {
		b, _ := json.Marshal(s)
		f.Add(b)
	}
	f.Fuzz(func(tt *testing.T, p []byte) {
		var v T
		if Decode(t, p, &v) != nil {
			return
		}
		b, err := json.Marshal(&v)
		if err != nil {
			tt.Fatalf("accepted %q but cannot encode it: %v", p, err)
		}
		var again T
		if err := Decode(t, b, &again); err != nil {
			tt.Fatalf("re-encoded %q does not decode: %v", b, err)
		}
		switch m := any(&v).(type) {
		case *Exec:
			_ = m.Validate()
		case *Attach:
			_ = m.Validate()
			_ = ValidName(m.Session)
		case *Listen:
			_ = m.Validate()
		}
	})
}

func FuzzDecodeHello(f *testing.F) {
	fuzzJSON(f, TypeHello, Hello{MinVersion: 1, MaxVersion: 1, Capabilities: []string{CapTTY}, Software: "corkd"})
}

func FuzzDecodeExec(f *testing.F) {
	fuzzJSON(f, TypeExec, Exec{Argv: []string{"sh", "-c", "echo"}, Env: []string{"A=1"}, User: "node", Dir: "/", TTY: true,
		Stdin: true, Term: "xterm", Size: WindowSize{Cols: 80, Rows: 24, XPixel: 640, YPixel: 480}})
}

func FuzzDecodeStarted(f *testing.F) {
	fuzzJSON(f, TypeStarted, Started{Session: "0123456789abcdef", PID: 42, StdinWindow: 1 << 18})
}

func FuzzDecodeSignal(f *testing.F) { fuzzJSON(f, TypeSignal, Signal{Name: "TERM"}) }

func FuzzDecodeAttach(f *testing.F) {
	resume := uint64(1234)
	fuzzJSON(f, TypeAttach, Attach{Session: "agent", Resume: &resume, Size: WindowSize{Cols: 80, Rows: 24}})
}

func FuzzDecodeSessions(f *testing.F) {
	fuzzJSON(f, TypeSessions, Sessions{Sessions: []SessionInfo{{ID: "0123456789abcdef", Name: "agent", User: "node",
		Program: "claude", State: StateExited, Exit: &Exit{Code: 7}}}})
}

func FuzzDecodeExit(f *testing.F) {
	fuzzJSON(f, TypeExit, Exit{Code: 137, Signal: "KILL", CoreDumped: true})
}

func FuzzDecodeError(f *testing.F) {
	fuzzJSON(f, TypeError, Error{Kind: KindUser, Message: "unknown user"})
}

func FuzzDecodeResize(f *testing.F) {
	f.Add(EncodeResize(WindowSize{Cols: 80, Rows: 24}))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, p []byte) {
		s, err := DecodeResize(p)
		if err != nil {
			return
		}
		if len(p) != 8 || !bytes.Equal(EncodeResize(s), p) {
			t.Fatalf("accepted %x as %v", p, s)
		}
		if c := s.Clamped(); c.Cols > MaxWindowDim || c.Rows > MaxWindowDim {
			t.Fatalf("clamped %v to %v", s, c)
		}
	})
}

func FuzzDecodeStdinAck(f *testing.F) {
	f.Add(EncodeStdinAck(4096))
	f.Fuzz(func(t *testing.T, p []byte) {
		n, err := DecodeStdinAck(p)
		if err == nil && !bytes.Equal(EncodeStdinAck(n), p) {
			t.Fatalf("accepted %x as %d", p, n)
		}
	})
}

// FuzzDecodeEntry: a copy entry either is refused or decodes to one that
// encodes back to the same bytes, with a path that stays beneath its root.
func FuzzDecodeEntry(f *testing.F) {
	for _, e := range []*Entry{
		{Kind: EntryFile, Mode: 0o644, Size: 10, Path: []byte("a/b")},
		{Kind: EntrySymlink, Mode: 0o777, Path: []byte("l"), Link: []byte("../x")},
		{Kind: EntryDir, Contents: true},
		{Kind: EntryHardlink, Path: []byte("b/c"), Link: []byte("a/b")},
	} {
		b, _ := EncodeEntry(e)
		f.Add(b, e.Contents)
	}
	f.Fuzz(func(t *testing.T, p []byte, root bool) {
		e, err := DecodeEntry(p, root)
		if err != nil {
			return
		}
		b, err := EncodeEntry(e)
		if err != nil || !bytes.Equal(b, p) {
			t.Fatalf("decoded %x to %+v, which encodes to %x, %v", p, e, b, err)
		}
		if !root && (bytes.HasPrefix(e.Path, []byte("/")) || bytes.Contains(append(append([]byte("/"), e.Path...), '/'), []byte("/../"))) {
			t.Fatalf("accepted path %q", e.Path)
		}
		if e.Kind == EntryHardlink && (root || CheckRelative(e.Link) != nil) {
			t.Fatalf("accepted hard link %q to %q (root %v)", e.Path, e.Link, root)
		}
	})
}

func FuzzDecodeForward(f *testing.F) { fuzzJSON(f, TypeForward, Forward{User: "node"}) }

// FuzzDecodeStream feeds every stream frame type: a frame the decoder
// accepts must encode back to the same payload.
func FuzzDecodeStream(f *testing.F) {
	seeds := []struct {
		t Type
		f StreamFrame
	}{
		{TypeStreamOpen, StreamFrame{ID: 1, Window: 1 << 18, Network: NetTCP, Address: "127.0.0.1:80"}},
		{TypeStreamOpen, StreamFrame{ID: 3, Window: 1, Network: NetUnix, Address: "/run/postgresql/.s.PGSQL.5432"}},
		{TypeStreamOpened, StreamFrame{ID: 2, Window: 1 << 18}},
		{TypeStreamRefused, StreamFrame{ID: 1, Reason: "dial tcp 127.0.0.1:80: connection refused"}},
		{TypeStreamData, StreamFrame{ID: 5, Data: []byte("GET / HTTP/1.1\r\n")}},
		{TypeStreamAck, StreamFrame{ID: 5, N: 32 << 10}},
		{TypeStreamEOF, StreamFrame{ID: 7}},
		{TypeStreamClose, StreamFrame{ID: 7}},
	}
	for _, s := range seeds {
		f.Add(byte(s.t), AppendStream(nil, s.t, &s.f)[HeaderSize:])
	}
	f.Fuzz(func(t *testing.T, typ byte, p []byte) {
		tt := Type(typ)
		sf, err := DecodeStream(tt, p)
		if err != nil {
			return
		}
		if again := AppendStream(nil, tt, &sf)[HeaderSize:]; !bytes.Equal(again, p) {
			t.Fatalf("%s %x decoded to %+v, which encodes as %x", tt, p, sf, again)
		}
	})
}

func FuzzDecodeListen(f *testing.F) {
	fuzzJSON(f, TypeListen, Listen{ID: 1, Port: 8080}, Listen{ID: 2, Path: "/run/user/1000/x.sock"})
}

func FuzzDecodeListening(f *testing.F) {
	fuzzJSON(f, TypeListening, Listening{ID: 1, Address: "127.0.0.1:8080"}, Listening{ID: 2, Error: "port 80 is privileged"})
}
