package streams

import (
	"bytes"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/prototest"
)

// joinWaiting waits until the guest's only stream has Join's Read waiting,
// so that the next data frame takes the direct path.
func joinWaiting(t *testing.T, mg *Mux) {
	t.Helper()
	waitFor(t, func() bool {
		mg.mu.Lock()
		defer mg.mu.Unlock()
		for _, s := range mg.streams {
			s.mu.Lock()
			w := s.waiting // with a socket, data() writes to it from now on
			s.mu.Unlock()
			if w {
				return true
			}
		}
		return false
	}, "Join's Read to wait")
}

// A local end that is an *os.File on a blocking descriptor (os.NewFile of
// a descriptor never made non-blocking: a tty, stdout, an inherited
// socket) is a syscall.Conn whose RawConn.Write callback blocks in
// write(2): the connection's reader then waits on one stream's consumer,
// and every other stream on the connection stalls.
func TestAttackDirectBlockingFileStallsTheConnection(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_SNDBUF, 4096)
	unix.SetsockoptInt(fds[1], unix.SOL_SOCKET, unix.SO_RCVBUF, 4096)
	blocking := os.NewFile(uintptr(fds[0]), "blocking") // stays blocking: not pollable
	farFD := fds[1]
	defer unix.Close(farFD)
	first := true
	accept := func(uint8, string) (io.ReadWriteCloser, error) {
		if first {
			first = false
			return blocking, nil
		}
		return echo(t)(0, "")
	}
	mh, mg := socketMuxes(t, config(1<<20, nil), config(1<<20, accept))
	a, err := mh.Open(protocol.NetTCP, "a:1")
	if err != nil {
		t.Fatal(err)
	}
	joinWaiting(t, mg)
	go a.Write(make([]byte, protocol.MaxStreamData)) // more than the socket takes; nobody reads farFD
	opened := make(chan error, 1)
	go func() {
		b, err := mh.Open(protocol.NetTCP, "b:1")
		if err == nil {
			b.Write([]byte("x"))
			_, err = io.ReadFull(b, make([]byte, 1))
		}
		opened <- err
	}()
	select {
	case err := <-opened:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		unix.Shutdown(farFD, unix.SHUT_RDWR) // unblock the reader's write before the test ends
		t.Fatal("a second stream got no answer in 5s: the connection's reader is blocked writing to the first stream's local end")
	}
}

// upper is a local end that changes what is written to it, as a wrapper
// that embeds the connection does (counting, logging, framing).
type upper struct {
	*net.UnixConn
	writes atomic.Int64
}

func (u *upper) Write(p []byte) (int, error) {
	u.writes.Add(1)
	return u.UnixConn.Write(bytes.ToUpper(p))
}

// A local end's own Write is not bypassed: a type that embeds
// *net.UnixConn (as listen.PeerConn does) has SyscallConn, but data()
// writes only to a bare TCP or unix connection, or a RawSocket.
func TestAttackDirectBypassesTheLocalEndsWrite(t *testing.T) {
	far := make(chan *net.UnixConn, 1)
	accept := func(uint8, string) (io.ReadWriteCloser, error) {
		local, f := prototest.SocketPair(t)
		far <- f
		return &upper{UnixConn: local}, nil
	}
	mh, mg := socketMuxes(t, config(1<<20, nil), config(1<<20, accept))
	s, err := mh.Open(protocol.NetTCP, "a:1")
	if err != nil {
		t.Fatal(err)
	}
	f := <-far
	waitFor(t, func() bool { // Join's Read waits: the moment a direct write would be taken
		mg.mu.Lock()
		defer mg.mu.Unlock()
		for _, s := range mg.streams {
			s.mu.Lock()
			w := s.waiting
			s.mu.Unlock()
			if w {
				return true
			}
		}
		return false
	}, "Join's Read to wait")
	if _, err := s.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	f.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, 5)
	if _, err := io.ReadFull(f, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != "HELLO" {
		t.Fatalf("the local end got %q, want %q through its own Write", got, "HELLO")
	}
}

// Request and reply in small pieces: each request goes straight to the
// socket with the bytes held below half the window, and the sender waits
// for the reply before the next. Credit must keep coming.
func TestAttackDirectPingPongUnderHalfTheWindow(t *testing.T) {
	const window = 1 << 16
	mh, _ := socketMuxes(t, config(window, nil), config(window, echo(t)))
	s, err := mh.Open(protocol.NetTCP, "a:1")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		msg := make([]byte, window/2-1)
		got := make([]byte, len(msg))
		for i := range 40 { // 40 * 32 KiB: many windows
			msg[0] = byte(i)
			if _, err := s.Write(msg); err != nil {
				done <- err
				return
			}
			if _, err := io.ReadFull(s, got); err != nil {
				done <- err
				return
			}
			if !bytes.Equal(got, msg) {
				done <- io.ErrUnexpectedEOF
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("ping-pong stalled: credit withheld")
	}
}

// The local end is closed while the reader writes to it directly, and
// sockets made at once after take its descriptor's number: none of them
// may receive a byte of the stream.
func TestAttackDirectNoWriteToAReusedDescriptor(t *testing.T) {
	locals := make(chan *net.UnixConn, 1)
	accept := func(uint8, string) (io.ReadWriteCloser, error) {
		local, f := prototest.SocketPair(t)
		go io.Copy(io.Discard, f)
		locals <- local
		return local, nil
	}
	mh, _ := socketMuxes(t, config(1<<20, nil), config(1<<20, accept))
	for range 20 {
		s, err := mh.Open(protocol.NetTCP, "a:1")
		if err != nil {
			t.Fatal(err)
		}
		local := <-locals
		stop := make(chan struct{})
		go func() {
			buf := bytes.Repeat([]byte{'z'}, 1000)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := s.Write(buf); err != nil {
					return
				}
			}
		}()
		time.Sleep(time.Millisecond)
		local.Close()
		var fresh []*net.UnixConn
		for range 8 {
			a, b := prototest.SocketPair(t)
			fresh = append(fresh, a, b)
		}
		close(stop)
		for _, c := range fresh {
			c.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
			if n, _ := c.Read(make([]byte, 1)); n > 0 {
				t.Fatal("a socket made after the local end closed got the stream's bytes")
			}
		}
		s.Close()
	}
}

// Bytes written directly, some of them left to Join by a full socket, then
// the peer's half close: the far end reads them all, in order, then EOF.
func TestAttackDirectHalfCloseAfterDirectBytes(t *testing.T) {
	far := make(chan *net.UnixConn, 1)
	accept := func(uint8, string) (io.ReadWriteCloser, error) {
		local, f := prototest.SocketPair(t)
		local.SetWriteBuffer(4096)
		far <- f
		return local, nil
	}
	mh, mg := socketMuxes(t, config(1<<16, nil), config(1<<16, accept))
	for _, size := range []int{1, 100, 4095, 32 << 10, 100000, 1 << 20} {
		s, err := mh.Open(protocol.NetTCP, "a:1")
		if err != nil {
			t.Fatal(err)
		}
		f := <-far
		joinWaiting(t, mg)
		want := make([]byte, size)
		for i := range want {
			want[i] = byte(i*13 + size)
		}
		go func() {
			s.Write(want)
			s.CloseWrite()
		}()
		f.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(f)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("size %d: got %d bytes (%v), want them all then EOF", size, len(got), err)
		}
		f.Close()
		s.Close()
		waitFor(t, func() bool { return mg.Streams() == 0 }, "the stream to go")
	}
}

// The local end's peer resets while bytes go to it directly: the stream
// ends, and the connection carries the next stream.
func TestAttackDirectResetMidStream(t *testing.T) {
	far := make(chan *net.UnixConn, 1)
	accept := func(uint8, string) (io.ReadWriteCloser, error) {
		local, f := prototest.SocketPair(t)
		far <- f
		return local, nil
	}
	mh, mg := socketMuxes(t, config(1<<16, nil), config(1<<16, accept))
	for range 20 {
		s, err := mh.Open(protocol.NetTCP, "a:1")
		if err != nil {
			t.Fatal(err)
		}
		f := <-far
		joinWaiting(t, mg)
		wrote := make(chan error, 1)
		go func() {
			_, err := s.Write(make([]byte, 4<<20))
			wrote <- err
		}()
		f.Read(make([]byte, 1000))
		f.Close()
		select {
		case <-wrote:
		case <-time.After(10 * time.Second):
			t.Fatal("the writer was left waiting for credit after the local end went")
		}
		s.Close()
		waitFor(t, func() bool { return mg.Streams() == 0 }, "the stream to go")
	}
}

// A small window and a slow reader of odd sizes, with direct bytes, bytes
// left to Join, and acknowledgements both ways interleaved.
func TestAttackDirectSmallWindowSlowReader(t *testing.T) {
	far := make(chan *net.UnixConn, 1)
	accept := func(uint8, string) (io.ReadWriteCloser, error) {
		local, f := prototest.SocketPair(t)
		local.SetWriteBuffer(4096)
		far <- f
		return local, nil
	}
	const window = 3000 // below a frame: half the window is due on most frames
	mh, _ := socketMuxes(t, config(window, nil), config(window, accept))
	s, err := mh.Open(protocol.NetTCP, "a:1")
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 2<<20)
	for i := range want {
		want[i] = byte(i * 7 / 3)
	}
	go func() {
		for p := want; len(p) > 0; {
			n := min(len(p), 1+len(p)%5000)
			if _, err := s.Write(p[:n]); err != nil {
				return
			}
			p = p[n:]
		}
		s.CloseWrite()
	}()
	f := <-far
	f.SetDeadline(time.Now().Add(60 * time.Second))
	var got []byte
	buf := make([]byte, 1)
	for {
		n, err := f.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			break
		}
		buf = make([]byte, 1+len(got)%7001)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes, want %d", len(got), len(want))
	}
}

// Bytes written straight to the socket, below half the window and so not
// yet acknowledged, still count against the window: a peer that sends
// past it ends the connection.
func TestAttackDirectBytesCountAgainstTheWindow(t *testing.T) {
	const window = 8192
	accept := func(uint8, string) (io.ReadWriteCloser, error) {
		local, f := prototest.SocketPair(t)
		go io.Copy(io.Discard, f)
		return local, nil
	}
	m, p, ran := runningMux(t, config(window, accept))
	p.send(protocol.TypeStreamOpen, protocol.StreamFrame{ID: 1, Window: window, Network: protocol.NetTCP, Address: "a:1"})
	if typ := p.next(5 * time.Second); typ != protocol.TypeStreamOpened {
		t.Fatalf("got %v, want %v", typ, protocol.TypeStreamOpened)
	}
	joinWaiting(t, m)
	p.send(protocol.TypeStreamData, protocol.StreamFrame{ID: 1, Data: make([]byte, window/2-1)})
	p.send(protocol.TypeStreamData, protocol.StreamFrame{ID: 1, Data: make([]byte, window/2+2)})
	select {
	case err := <-ran:
		if err == nil || !strings.Contains(err.Error(), "overran") {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%d bytes taken on a window of %d", window+1, window)
	}
}
