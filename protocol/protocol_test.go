package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"unsafe"
)

func TestFrameRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	frames := []struct {
		t Type
		p []byte
	}{
		{TypeStdin, []byte("hello\x00\xff raw bytes")},
		{TypeStdinEOF, nil},
		{TypeStdout, bytes.Repeat([]byte{0xAB}, MaxPayload)},
		{TypeResize, EncodeResize(WindowSize{Cols: 132, Rows: 43, XPixel: 1056, YPixel: 688})},
		{TypeStdinAck, EncodeStdinAck(1 << 31)},
	}
	for _, f := range frames {
		if err := w.WriteFrame(f.t, f.p); err != nil {
			t.Fatal(err)
		}
	}
	r := NewReader(&buf)
	for _, f := range frames {
		typ, p, err := r.Next()
		if err != nil {
			t.Fatalf("%s: %v", f.t, err)
		}
		if typ != f.t || !bytes.Equal(p, f.p) {
			t.Fatalf("got %s with %d bytes, want %s with %d", typ, len(p), f.t, len(f.p))
		}
	}
	if _, _, err := r.Next(); err != io.EOF {
		t.Fatalf("after the last frame: %v, want io.EOF", err)
	}
}

func TestMessageRoundTrip(t *testing.T) {
	msgs := []struct {
		t   Type
		in  any
		out any
	}{
		{TypeHello, &Hello{MinVersion: 1, MaxVersion: 3, Version: 1, Capabilities: []string{CapTTY, CapPing}, Software: "corkd test"}, &Hello{}},
		{TypeExec, &Exec{Argv: []string{"sh", "-c", "echo hi"}, Env: []string{"A=b=c"}, User: "node", Dir: "/tmp", TTY: true, Stdin: true, Term: "xterm-256color", Size: WindowSize{80, 24, 640, 480}}, &Exec{}},
		{TypeStarted, &Started{Session: "abc", PID: 42, StdinWindow: 1 << 20}, &Started{}},
		{TypeSignal, &Signal{Name: "TERM"}, &Signal{}},
		{TypeExit, &Exit{Code: 137, Signal: "KILL", CoreDumped: true}, &Exit{}},
		{TypeError, &Error{Kind: KindUser, Message: `no user "x"`}, &Error{}},
	}
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for _, m := range msgs {
		if err := w.WriteJSON(m.t, m.in); err != nil {
			t.Fatal(err)
		}
	}
	r := NewReader(&buf)
	for _, m := range msgs {
		typ, p, err := r.Next()
		if err != nil || typ != m.t {
			t.Fatalf("got %s, %v; want %s", typ, err, m.t)
		}
		if err := Decode(typ, p, m.out); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(m.in, m.out) {
			t.Fatalf("%s: got %+v, want %+v", m.t, m.out, m.in)
		}
	}
}

func TestReaderRejects(t *testing.T) {
	hdr := func(typ Type, n uint32) []byte {
		b := make([]byte, HeaderSize)
		PutHeader(b, typ, int(n))
		return b
	}
	tests := []struct {
		name  string
		input []byte
		want  error
		text  string
	}{
		{"oversize", hdr(TypeStdout, MaxPayload+1), ErrTooLarge, "1048577 bytes"},
		{"oversize max uint32", hdr(TypeExec, 1<<32-1), ErrTooLarge, "the limit is 1048576"},
		{"unknown type", hdr(Type(0x7f), 3), ErrUnknownType, "0x7f"},
		{"unknown type zero", hdr(Type(0), 0), ErrUnknownType, "0x00"},
		{"truncated header", []byte{byte(TypeStdin), 0, 0}, ErrTruncated, "3 of 5"},
		{"truncated payload", append(hdr(TypeStdin, 10), "abc"...), ErrTruncated, "3 of 10"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A reader that would fail the test if the payload were read
			// past what the input holds proves the check comes first.
			_, _, err := NewReader(bytes.NewReader(tt.input)).Next()
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.text) {
				t.Fatalf("error %q does not name %q", err, tt.text)
			}
		})
	}
}

func TestOversizeRefusedBeforeAllocation(t *testing.T) {
	b := make([]byte, HeaderSize)
	PutHeader(b, TypeStdin, 1<<31)
	// Endless bytes follow the header: a reader that trusted the length
	// would allocate 2 GiB and read them.
	r := NewReader(io.MultiReader(bytes.NewReader(b), zeroReader{}))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, _, err := r.Next(); !errors.Is(err, ErrTooLarge) {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	// The error message may be allocated, nothing the size of the payload.
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<10 {
		t.Fatalf("refusing the frame allocated %d bytes", grew)
	}
}

// TestCheckBeforeAllocation: a check set with SetCheck sees each frame's
// type and announced length before the payload is allocated, and its error
// ends the read.
func TestCheckBeforeAllocation(t *testing.T) {
	b := make([]byte, HeaderSize)
	PutHeader(b, TypeExec, MaxPayload)
	r := NewReader(io.MultiReader(bytes.NewReader(b), zeroReader{}))
	errOver := errors.New("over budget")
	var seen []uint32
	r.SetCheck(func(typ Type, n uint32) error {
		seen = append(seen, n)
		return errOver
	})
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, _, err := r.Next(); err != errOver {
		t.Fatalf("Next: %v, want the check's error", err)
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<10 || len(seen) != 1 || seen[0] != MaxPayload {
		t.Fatalf("check saw %v; refusing the frame allocated %d bytes", seen, grew)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestWriterRefusesOversize(t *testing.T) {
	var buf bytes.Buffer
	err := NewWriter(&buf).WriteFrame(TypeStdout, make([]byte, MaxPayload+1))
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
	if buf.Len() != 0 {
		t.Fatalf("wrote %d bytes of a refused frame", buf.Len())
	}
}

func TestNegotiate(t *testing.T) {
	if v, err := Negotiate(Hello{MinVersion: 1, MaxVersion: 5}, 1, 3); err != nil || v != 3 {
		t.Fatalf("got %d, %v; want 3", v, err)
	}
	_, err := Negotiate(Hello{MinVersion: 2, MaxVersion: 4}, 1, 1)
	var perr *Error
	if !errors.As(err, &perr) || perr.Kind != KindVersion {
		t.Fatalf("got %v, want a version Error", err)
	}
	for _, want := range []string{"versions 2 to 4", "version 1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	var e Exec
	if err := Decode(TypeExec, []byte(`{"argv":`), &e); err == nil || !strings.Contains(err.Error(), "bad exec payload") {
		t.Fatalf("truncated JSON: %v", err)
	}
	if err := Decode(TypeExec, []byte(`{"argv":["a"]} {}`), &e); err == nil {
		t.Fatal("trailing data accepted")
	}
	if err := Decode(TypeExec, []byte(`{"argv":"sh"}`), &e); err == nil {
		t.Fatal("argv as a string accepted")
	}
	if _, err := DecodeResize([]byte{0, 80, 0}); err == nil || !strings.Contains(err.Error(), "3 bytes") {
		t.Fatalf("short resize: %v", err)
	}
	if _, err := DecodeStdinAck(nil); err == nil {
		t.Fatal("empty ack accepted")
	}
}

func TestExecValidate(t *testing.T) {
	ok := Exec{Argv: []string{"true"}, Env: []string{"A=", "B=c=d"}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid request refused: %v", err)
	}
	tests := []struct {
		name string
		e    Exec
		text string
	}{
		{"empty argv", Exec{}, "empty argv"},
		{"empty program", Exec{Argv: []string{""}}, "empty argv"},
		{"many args", Exec{Argv: append([]string{"x"}, make([]string, MaxArgs)...)}, "4097 arguments"},
		{"env without =", Exec{Argv: []string{"x"}, Env: []string{"PATH"}}, "not KEY=VALUE"},
		{"env empty key", Exec{Argv: []string{"x"}, Env: []string{"=v"}}, "not KEY=VALUE"},
		{"env NUL", Exec{Argv: []string{"x"}, Env: []string{"A=b\x00c"}}, "NUL"},
		{"arg NUL", Exec{Argv: []string{"x", "a\x00"}}, "argument 1"},
		{"user NUL", Exec{Argv: []string{"x"}, User: "no\x00de"}, "user"},
		{"too much env", Exec{Argv: []string{"x"}, Env: make([]string, MaxEnv+1)}, "environment entries"},
		{"too many modes", Exec{Argv: []string{"x"}, Modes: manyModes(MaxModes + 1)}, "129 terminal modes"},
		{"long terminal token", Exec{Argv: []string{"x"}, Terminal: strings.Repeat("t", MaxTerminal+1)}, "65 bytes"},
		{"terminal token with a control", Exec{Argv: []string{"x"}, Terminal: "t\x1b"}, "not printable"},
	}
	for _, tt := range tests {
		err := tt.e.Validate()
		if err == nil || !strings.Contains(err.Error(), tt.text) {
			t.Errorf("%s: got %v, want an error naming %q", tt.name, err, tt.text)
		}
	}
}

// TestAttachValidate: an attach names a session, and its terminal token is
// bounded and printable.
func TestAttachValidate(t *testing.T) {
	if err := (&Attach{Session: "s", Terminal: strings.Repeat("0", MaxTerminal)}).Validate(); err != nil {
		t.Fatalf("valid attach refused: %v", err)
	}
	for _, tt := range []struct {
		a    Attach
		text string
	}{
		{Attach{}, "no session"},
		{Attach{Session: "s", Terminal: strings.Repeat("t", MaxTerminal+1)}, "65 bytes"},
		{Attach{Session: "s", Terminal: "a b"}, "not printable"},
	} {
		if err := tt.a.Validate(); err == nil || !strings.Contains(err.Error(), tt.text) {
			t.Errorf("%+v: got %v, want an error naming %q", tt.a, err, tt.text)
		}
	}
}

// TestListenValidate: a Listen's path is bounded, absolute, without NUL,
// and never beside a port.
func TestListenValidate(t *testing.T) {
	for _, ok := range []Listen{{ID: 1}, {ID: 1, Port: 80}, {ID: 1, Path: "/" + strings.Repeat("x", MaxStreamAddress-1)}} {
		if err := ok.Validate(); err != nil {
			t.Errorf("%+.40v refused: %v", ok, err)
		}
	}
	for _, tt := range []struct {
		l    Listen
		text string
	}{
		{Listen{Port: 80}, "id 0"},
		{Listen{ID: 1, Port: 80, Path: "/x.sock"}, "both port 80 and a path"},
		{Listen{ID: 1, Path: "/" + strings.Repeat("x", MaxStreamAddress)}, "4097 bytes"},
		{Listen{ID: 1, Path: "x.sock"}, "not absolute"},
		{Listen{ID: 1, Path: "/tmp/x\x00.sock"}, "NUL"},
	} {
		if err := tt.l.Validate(); err == nil || !strings.Contains(err.Error(), tt.text) {
			t.Errorf("%+.40v: got %v, want an error naming %q", tt.l, err, tt.text)
		}
	}
}

func manyModes(n int) map[string]uint32 {
	m := make(map[string]uint32, n)
	for i := range n {
		m[fmt.Sprint("M", i)] = 1
	}
	return m
}

// TestExecFieldsAnOlderAgentIgnores: fields added after version 1 (the
// terminal modes) must not make a version-1 agent refuse the request; its
// decoder ignores fields it does not know.
func TestExecFieldsAnOlderAgentIgnores(t *testing.T) {
	p, err := json.Marshal(&Exec{Argv: []string{"sh"}, TTY: true, Modes: map[string]uint32{"VERASE": 8, "IUTF8": 1}})
	if err != nil {
		t.Fatal(err)
	}
	var v1 struct {
		Argv []string `json:"argv"`
		TTY  bool     `json:"tty"`
	}
	if err := Decode(TypeExec, p, &v1); err != nil || !v1.TTY || v1.Argv[0] != "sh" {
		t.Fatalf("a version-1 exec decoder on %s: %+v, %v", p, v1, err)
	}
}

func FuzzReader(f *testing.F) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	w.WriteJSON(TypeExec, &Exec{Argv: []string{"sh"}, TTY: true, Size: WindowSize{80, 24, 0, 0}})
	w.WriteFrame(TypeResize, EncodeResize(WindowSize{Cols: 1, Rows: 2}))
	f.Add(buf.Bytes())
	f.Add([]byte{0x10, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data))
		for {
			typ, p, err := r.Next()
			if err != nil {
				return
			}
			if len(p) > MaxPayload || !typ.Known() {
				t.Fatalf("accepted %s with %d bytes", typ, len(p))
			}
			switch typ {
			case TypeExec:
				var e Exec
				if Decode(typ, p, &e) == nil {
					_ = e.Validate()
				}
			case TypeResize:
				_, _ = DecodeResize(p)
			}
		}
	})
}

func TestNextSharedReusesItsBuffer(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	w.WriteFrame(TypeStdout, []byte("first frame, the longer one"))
	w.WriteFrame(TypeStdout, []byte("second"))
	w.WriteFrame(TypeStderr, bytes.Repeat([]byte("z"), 100))
	r := NewReader(&buf)
	r.NextShared()
	shared := r.shared
	_, b, err := r.NextShared()
	if err != nil || string(b) != "second" {
		t.Fatalf("got %q, %v", b, err)
	}
	if !within(b, shared) {
		t.Fatal("a smaller frame did not reuse the buffer")
	}
	if _, c, err := r.NextShared(); err != nil || len(c) != 100 || c[99] != 'z' {
		t.Fatalf("a larger frame: %d bytes, %v", len(c), err)
	}
}

// blockingWriter holds every Write until release is closed.
type blockingWriter struct {
	entered chan struct{}
	release chan struct{}
}

func (b *blockingWriter) Write(p []byte) (int, error) {
	b.entered <- struct{}{}
	<-b.release
	return len(p), nil
}

// TestTryWriteFrameOfNeverWaits: while another frame is being written,
// TryWriteFrameOf reports false at once and has not asked for its payload;
// a payload that reports false writes nothing.
func TestTryWriteFrameOfNeverWaits(t *testing.T) {
	bw := &blockingWriter{entered: make(chan struct{}, 1), release: make(chan struct{})}
	w := NewWriter(bw)
	done := make(chan error, 1)
	go func() { done <- w.WriteFrame(TypeStdin, []byte("busy")) }()
	<-bw.entered
	asked := false
	tried, err := w.TryWriteFrameOf(TypeResize, func() ([]byte, bool) { asked = true; return nil, false })
	if tried || err != nil || asked {
		t.Fatalf("TryWriteFrameOf on a busy writer: tried %v, err %v, payload asked %v", tried, err, asked)
	}
	close(bw.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	var buf bytes.Buffer
	w = NewWriter(&buf)
	if err := w.WriteFrameOf(TypeResize, func() ([]byte, bool) { return nil, false }); err != nil || buf.Len() != 0 {
		t.Fatalf("a payload that reports false wrote %d bytes, err %v", buf.Len(), err)
	}
	size := WindowSize{Cols: 80, Rows: 24}
	tried, err = w.TryWriteFrameOf(TypeResize, func() ([]byte, bool) { return EncodeResize(size), true })
	if !tried || err != nil {
		t.Fatalf("TryWriteFrameOf on a free writer: tried %v, err %v", tried, err)
	}
	typ, p, err := NewReader(&buf).Next()
	if err != nil || typ != TypeResize {
		t.Fatalf("read %v, %v", typ, err)
	}
	if got, _ := DecodeResize(p); got != size {
		t.Fatalf("size %v, want %v", got, size)
	}
}

func within(p, buf []byte) bool {
	start := uintptr(unsafe.Pointer(unsafe.SliceData(buf[:cap(buf)])))
	at := uintptr(unsafe.Pointer(unsafe.SliceData(p)))
	return at >= start && at+uintptr(len(p)) <= start+uintptr(cap(buf))
}

// TestPayloadReadAligned: the payload bytes read straight from the stream,
// after those the reader had buffered with the header, start on a
// payloadAlign boundary, for Next and NextShared alike.
func TestPayloadReadAligned(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	payload := bytes.Repeat([]byte("0123456789"), 10000)
	for range 4 {
		w.WriteFrame(TypeStdout, payload)
	}
	r := NewReader(&buf)
	for i, next := range []func() (Type, []byte, error){r.Next, r.NextShared, r.Next, r.NextShared} {
		// The reader fills its buffer whole from a bytes.Buffer, so the
		// first readBuffer-HeaderSize payload bytes come from it.
		_, p, err := next()
		if err != nil || !bytes.Equal(p, payload) {
			t.Fatalf("frame %d: %d bytes, %v", i, len(p), err)
		}
		if at := uintptr(unsafe.Pointer(&p[readBuffer-HeaderSize])); at%payloadAlign != 0 {
			t.Fatalf("frame %d: the bytes read straight start at %#x, not on a %d-byte boundary", i, at, payloadAlign)
		}
	}
}

func TestValidName(t *testing.T) {
	for name, bad := range map[string]bool{
		"":                             false,
		"build":                        false,
		"0123456789abcdef":             true, // an id's form
		"0123456789ABCDEF":             false,
		"0123456789abcde":              false,
		"a/b":                          true,
		"a\x00b":                       true,
		"tab\there":                    true,
		"del\x7f":                      true,
		strings.Repeat("n", MaxName):   false,
		strings.Repeat("n", MaxName+1): true,
	} {
		if err := ValidName(name); (err != nil) != bad {
			t.Errorf("ValidName(%q) = %v", name, err)
		}
	}
}

// TestNextCopying: the chosen type's payloads go to the writer whole,
// whether the reader had buffered all of one, part or none; other frames
// come back as NextShared returns them; a payload cut short is an error
// that counts what did arrive.
func TestNextCopying(t *testing.T) {
	var stream bytes.Buffer
	w := NewWriter(&stream)
	big := bytes.Repeat([]byte("0123456789"), 10000) // far over the read buffer
	w.WriteFrame(TypeStdout, []byte("small"))
	w.WriteFrame(TypeStderr, []byte("err"))
	w.WriteFrame(TypeStdout, big)
	w.WriteFrame(TypeStdout, nil)
	r := NewReader(&stream)
	var out bytes.Buffer
	for i, want := range []struct {
		t Type
		p string
		n int64
	}{{TypeStdout, "", 5}, {TypeStderr, "err", 0}, {TypeStdout, "", int64(len(big))}, {TypeStdout, "", 0}} {
		typ, p, n, err := r.NextCopying(TypeStdout, &out)
		if err != nil || typ != want.t || string(p) != want.p || n != want.n {
			t.Fatalf("frame %d: %s %q %d %v, want %s %q %d", i, typ, p, n, err, want.t, want.p, want.n)
		}
	}
	if out.String() != "small"+string(big) {
		t.Fatalf("copied %d bytes, want %d", out.Len(), 5+len(big))
	}
	if _, _, _, err := r.NextCopying(TypeStdout, &out); err != io.EOF {
		t.Fatalf("at the end: %v", err)
	}

	stream.Reset()
	w.WriteFrame(TypeStdout, big)
	stream.Truncate(HeaderSize + 6000)
	out.Reset()
	r = NewReader(&stream)
	if _, _, n, err := r.NextCopying(TypeStdout, &out); !errors.Is(err, ErrTruncated) || n != 6000 || out.Len() != 6000 {
		t.Fatalf("cut short: %d bytes, %d copied, %v", n, out.Len(), err)
	}
}

// TestNewDataFrameAligned: a data frame's payload starts on a payloadAlign
// boundary, with room for the header before it and n bytes after.
func TestNewDataFrameAligned(t *testing.T) {
	for _, n := range []int{1, 4096, 128 << 10} {
		b := NewDataFrame(n)
		if len(b) != HeaderSize+n {
			t.Fatalf("NewDataFrame(%d) has %d bytes, want %d", n, len(b), HeaderSize+n)
		}
		if at := uintptr(unsafe.Pointer(&b[HeaderSize])); at%payloadAlign != 0 {
			t.Fatalf("NewDataFrame(%d): the payload starts at %#x, not on a %d-byte boundary", n, at, payloadAlign)
		}
	}
}
