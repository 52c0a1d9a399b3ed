package streams

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/prototest"
)

// onlyStream is m's one stream, or nil.
func onlyStream(m *Mux) *Stream {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.streams {
		return s
	}
	return nil
}

// waitFreed waits until both Muxes have freed every stream, and fails
// the test if either connection ended.
func waitFreed(t *testing.T, mh, mg *Mux) {
	t.Helper()
	waitFor(t, func() bool { return mg.Streams() == 0 && mh.Streams() == 0 }, "every stream freed")
	if mg.Err() != nil || mh.Err() != nil {
		t.Fatalf("connection ended: host %v, guest %v", mh.Err(), mg.Err())
	}
}

// waitGoroutines waits until no more goroutines run than before, give or
// take the runtime's own.
func waitGoroutines(t *testing.T, before int) {
	t.Helper()
	waitFor(t, func() bool { return runtime.NumGoroutine() <= before+2 }, fmt.Sprintf("goroutines back to %d", before))
}

// within runs f and fails the test when it does not return within d.
func within(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(d):
		t.Fatalf("%s: not done within %v", what, d)
	}
}

// DEFECT: an opener that sends a whole window of early data to an acceptor
// whose window is protocol.EarlyWindow (the least early data allows) has
// no credit left once the answer comes. deliverEarly writes those bytes to
// the service itself, without counting them as read, and Join's Read then
// waits with an empty buffer and nothing owed: no acknowledgement ever
// goes, and the opener waits for credit forever.
func TestAttackSetupWholeEarlyWindowDeliveredDirectlyIsAcknowledged(t *testing.T) {
	gate := make(chan struct{})
	mh, mg := socketMuxes(t, earlyConfig(1<<16, nil), earlyConfig(protocol.EarlyWindow, gated(t, gate, false)))
	s, err := mh.Open(protocol.NetTCP, "a:1")
	if err != nil {
		t.Fatal(err)
	}
	request := bytes.Repeat([]byte("r"), 2*protocol.EarlyWindow)
	go func() {
		s.Write(request)
		s.CloseWrite()
	}()
	waitFor(t, func() bool { return buffered(mg) == protocol.EarlyWindow }, "the whole early window to be buffered while the guest connects")
	close(gate)
	got := readAll(t, s)
	if !bytes.Equal(got, request) {
		s.mu.Lock()
		credit := s.credit
		s.mu.Unlock()
		t.Fatalf("echoed %d bytes of %d; the opener's credit is %d: the early window delivered directly was never acknowledged", len(got), len(request), credit)
	}
}

// The same through OpenFor, as cork forward does it: a client's request of
// more than the window, all waiting in the socket when it is accepted.
func TestAttackSetupOpenForWholeWindowToAMinimalWindow(t *testing.T) {
	gate := make(chan struct{})
	mh, mg := socketMuxes(t, earlyConfig(1<<16, nil), earlyConfig(protocol.EarlyWindow, gated(t, gate, false)))
	request := bytes.Repeat([]byte("q"), 3*protocol.EarlyWindow)
	client := openSpendingTheEarlyWindow(t, mh, request)
	// The guest has all of it before it connects.
	waitFor(t, func() bool { return buffered(mg) == protocol.EarlyWindow }, "the early window buffered in the guest")
	close(gate)
	if got := readAll(t, client); !bytes.Equal(got, request) {
		t.Fatalf("echoed %d bytes of %d", len(got), len(request))
	}
}

// Windows so small that half of them rounds to 0 or 1, with Join's direct
// path on both sides: bulk both ways must finish.
func TestAttackSetupTinyWindows(t *testing.T) {
	for _, window := range []uint32{1, 2, 3, 5} {
		t.Run(fmt.Sprint(window), func(t *testing.T) {
			mh, _ := socketMuxes(t, config(window, nil), config(window, echo(t)))
			s, err := mh.Open(protocol.NetTCP, "a:1")
			if err != nil {
				t.Fatal(err)
			}
			local, client := prototest.SocketPair(t)
			go Join(s, local, nil)
			want := bytes.Repeat([]byte("0123456789"), 2000)
			go func() {
				client.Write(want)
				client.CloseWrite()
			}()
			if got := readAll(t, client); !bytes.Equal(got, want) {
				t.Fatalf("window %d: echoed %d bytes of %d", window, len(got), len(want))
			}
		})
	}
}

// Ping-pong of single bytes on a tiny window, through Join on both sides,
// many rounds: every round must get credit.
func TestAttackSetupTinyWindowPingPong(t *testing.T) {
	for _, window := range []uint32{1, 2, 3} {
		mh, _ := socketMuxes(t, config(window, nil), config(window, echo(t)))
		s, err := mh.Open(protocol.NetTCP, "a:1")
		if err != nil {
			t.Fatal(err)
		}
		within(t, 20*time.Second, fmt.Sprintf("window %d ping-pong", window), func() error {
			b := make([]byte, 1)
			for i := range 2000 {
				if _, err := s.Write([]byte{byte(i)}); err != nil {
					return err
				}
				if _, err := io.ReadFull(s, b); err != nil {
					return err
				}
				if b[0] != byte(i) {
					return fmt.Errorf("round %d: %d", i, b[0])
				}
			}
			return nil
		})
		s.Close()
	}
}

// Exactly half the window, then a reply, over and over, on a plain
// (non-socket) reader: credit for exactly W/2 read.
func TestAttackSetupExactlyHalfWindowPingPong(t *testing.T) {
	const window = 1024
	mh, _ := socketMuxes(t, config(window, nil), config(window, echo(t)))
	s, err := mh.Open(protocol.NetTCP, "a:1")
	if err != nil {
		t.Fatal(err)
	}
	within(t, 20*time.Second, "half-window ping-pong", func() error {
		for _, size := range []int{window / 2, window/2 + 1, window/2 - 1, window, 1} {
			msg := bytes.Repeat([]byte{byte(size)}, size)
			got := make([]byte, size)
			for range 200 {
				if _, err := s.Write(msg); err != nil {
					return err
				}
				if _, err := io.ReadFull(s, got); err != nil {
					return err
				}
				if !bytes.Equal(got, msg) {
					return fmt.Errorf("size %d: corrupt echo", size)
				}
			}
		}
		return nil
	})
}

// Early data delivered straight to the service, then more data: order is
// kept whether the rest comes before or after Join's first Read.
func TestAttackSetupDeliverEarlyThenMoreKeepsOrder(t *testing.T) {
	for round := range 50 {
		gate := make(chan struct{})
		mh, mg := socketMuxes(t, earlyConfig(1<<16, nil), earlyConfig(1<<16, gated(t, gate, false)))
		s, err := mh.Open(protocol.NetTCP, "a:1")
		if err != nil {
			t.Fatal(err)
		}
		var want []byte
		for i := range 200 {
			want = fmt.Appendf(want, "%05d,", i)
		}
		s.Write(want[:1000])
		waitFor(t, func() bool { return buffered(mg) == 1000 }, "early data buffered")
		go func() {
			close(gate)
			for p := want[1000:]; len(p) > 0; p = p[min(7, len(p)):] {
				s.Write(p[:min(7, len(p))])
			}
			s.CloseWrite()
		}()
		if got := readAll(t, s); !bytes.Equal(got, want) {
			t.Fatalf("round %d: echoed\n%q\nwant\n%q", round, got, want)
		}
	}
}

// An opener that closes while the guest connects: nothing of the stream
// may follow its close, both sides free it, and the local end is closed.
func TestAttackSetupEarlyCloseClosesTheLocalEnd(t *testing.T) {
	services := make(chan *net.UnixConn, 1)
	gate := make(chan struct{})
	accept := func(uint8, string) (io.ReadWriteCloser, error) {
		<-gate
		local, far := prototest.SocketPair(t)
		services <- far
		return local, nil
	}
	mh, mg := socketMuxes(t, earlyConfig(1<<16, nil), earlyConfig(1<<16, accept))
	s, err := mh.Open(protocol.NetTCP, "a:1")
	if err != nil {
		t.Fatal(err)
	}
	s.Write([]byte("abandoned"))
	s.Close()
	waitFor(t, func() bool {
		g := onlyStream(mg)
		if g == nil {
			return false
		}
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.gotClose
	}, "the close to reach the guest")
	close(gate)
	far := <-services
	far.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(far)
	if err != nil {
		t.Fatalf("the service's connection was not closed: %v (read %q)", err, got)
	}
	t.Logf("the service of a stream closed before its answer read %q", got)
	waitFreed(t, mh, mg)
}

// Both directions ending at the same moment, the peer's close racing the
// acceptor's EOF-and-close, many times: no frame after a close (the peer
// would end the connection over a frame for a forgotten stream), every
// stream freed on both sides, WhenGone's release called exactly once, and
// no goroutine left behind.
func TestAttackSetupEndsRaceAndNothingLeaks(t *testing.T) {
	var releases sync.Map // *Stream -> *atomic.Int32
	var accepted sync.WaitGroup
	accept := func(uint8, string) (io.ReadWriteCloser, error) {
		local, far := prototest.SocketPair(t)
		go func() {
			io.Copy(far, far) // echo to the peer's EOF
			far.Close()       // then close at once: the join's last end
		}()
		return local, nil
	}
	before := runtime.NumGoroutine()
	hc, gc := earlyConfig(1<<16, nil), earlyConfig(1<<16, accept)
	hc.MaxStreams, gc.MaxStreams = 1000, 1000
	mh, mg := socketMuxes(t, hc, gc)
	const n = 400
	for i := range n {
		s, err := mh.Open(protocol.NetTCP, "a:1")
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		var count atomic.Int32
		releases.Store(s, &count)
		s.WhenGone(func() { count.Add(1) })
		accepted.Add(1)
		go func() {
			defer accepted.Done()
			s.Write([]byte("ping"))
			s.CloseWrite()
			b := make([]byte, 4)
			io.ReadFull(s, b)
			switch i % 3 {
			case 0:
				s.Close() // racing the guest's EOF and close
			case 1:
				io.ReadAll(s)
				s.Close()
			default:
				// the guest's close alone ends it
				io.ReadAll(s)
			}
		}()
	}
	accepted.Wait()
	waitFreed(t, mh, mg)
	releases.Range(func(k, v any) bool {
		if c := v.(*atomic.Int32).Load(); c != 1 {
			t.Errorf("stream %d released %d times", k.(*Stream).id, c)
		}
		return true
	})
	mh.Close()
	mg.Close()
	waitGoroutines(t, before)
}

// Join on both sides with sockets, many streams at once, the guest's
// service and the host's client closing together: Join returns, nothing
// leaks, both Muxes keep the connection.
func TestAttackSetupJoinBothSidesManyStreams(t *testing.T) {
	accept := func(uint8, string) (io.ReadWriteCloser, error) {
		local, far := prototest.SocketPair(t)
		go func() {
			io.Copy(far, far)
			far.Close()
		}()
		return local, nil
	}
	before := runtime.NumGoroutine()
	hc, gc := earlyConfig(1<<16, nil), earlyConfig(1<<16, accept)
	hc.MaxStreams, gc.MaxStreams = 1000, 1000
	mh, mg := socketMuxes(t, hc, gc)
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		local, client := prototest.SocketPair(t)
		msg := bytes.Repeat([]byte{byte(i)}, 100+i*331)
		client.Write(msg[:min(len(msg), 50)])
		s, err := mh.OpenFor(protocol.NetTCP, "a:1", local)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(2)
		go func() { defer wg.Done(); Join(s, local, nil) }()
		go func() {
			defer wg.Done()
			go func() {
				client.Write(msg[min(len(msg), 50):])
				client.CloseWrite()
			}()
			client.SetReadDeadline(time.Now().Add(15 * time.Second))
			got, err := io.ReadAll(client)
			client.Close()
			if err != nil || !bytes.Equal(got, msg) {
				errs <- fmt.Errorf("stream %d: echoed %d of %d bytes, %v", i, len(got), len(msg), err)
			}
		}()
	}
	within(t, 20*time.Second, "every join", func() error { wg.Wait(); return nil })
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	waitFreed(t, mh, mg)
	mh.Close()
	mg.Close()
	waitGoroutines(t, before)
}

// OpenFor on a TCP connection the client reset after sending: the request
// goes, the reset ends the join, the stream is freed on both sides.
func TestAttackSetupOpenForResetConnection(t *testing.T) {
	services := make(chan *net.UnixConn, 1)
	accept := func(uint8, string) (io.ReadWriteCloser, error) {
		local, far := prototest.SocketPair(t)
		services <- far
		return local, nil
	}
	mh, mg := socketMuxes(t, earlyConfig(1<<16, nil), earlyConfig(1<<16, accept))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	local, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("request"))
	c.(*net.TCPConn).SetLinger(0)
	c.Close() // RST
	tl := local.(*net.TCPConn)
	rc, _ := tl.SyscallConn()
	waitFor(t, func() bool {
		n := 0
		rc.Control(func(fd uintptr) { n = queuedBytes(int(fd)) })
		return n == 7
	}, "the request queued")
	s, err := mh.OpenFor(protocol.NetTCP, "a:1", local)
	if err != nil {
		t.Fatal(err)
	}
	joined := make(chan struct{})
	go func() { Join(s, local, nil); close(joined) }()
	far := <-services
	far.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, 7)
	if _, err := io.ReadFull(far, got); err != nil || string(got) != "request" {
		t.Fatalf("service read %q, %v", got, err)
	}
	// The reset ends the join: the service sees its connection end.
	if _, err := io.ReadAll(far); err != nil {
		t.Fatalf("the service's connection did not end after the client's reset: %v", err)
	}
	select {
	case <-joined:
	case <-time.After(10 * time.Second):
		t.Fatal("Join did not return after the reset")
	}
	waitFor(t, func() bool { return mg.Streams() == 0 && mh.Streams() == 0 }, "the stream freed")
}

// OpenFor at MaxStreams or on an ended Mux fails and takes no place; what
// it read from the connection is gone with it (the callers close it).
func TestAttackSetupOpenForAtTheLimit(t *testing.T) {
	cfg := earlyConfig(1<<16, nil)
	cfg.MaxStreams = 1
	gate := make(chan struct{})
	defer close(gate)
	mh, _ := socketMuxes(t, cfg, earlyConfig(1<<16, gated(t, gate, false)))
	first, _ := prototest.SocketPair(t)
	if _, err := mh.OpenFor(protocol.NetTCP, "a:1", first); err != nil {
		t.Fatal(err)
	}
	local, client := prototest.SocketPair(t)
	client.Write([]byte("lost?"))
	waitFor(t, func() bool { return queuedBytesOf(t, local) == 5 }, "the request queued")
	if _, err := mh.OpenFor(protocol.NetTCP, "a:1", local); err == nil {
		t.Fatal("OpenFor past MaxStreams succeeded")
	}
	if mh.Streams() != 1 {
		t.Fatalf("%d streams after a failed OpenFor", mh.Streams())
	}
	t.Logf("bytes left in the socket after a failed OpenFor: %d of 5", queuedBytesOf(t, local))
	mh.Close()
	if _, err := mh.OpenFor(protocol.NetTCP, "a:1", local); err == nil {
		t.Fatal("OpenFor on an ended Mux succeeded")
	}
}

// Early data the new socket takes only part of (a small send buffer, a
// service not reading yet): the rest follows through Join, in order, and
// more data after it.
func TestAttackSetupDeliverEarlyPartialKeepsOrder(t *testing.T) {
	gate := make(chan struct{})
	accept := func(uint8, string) (io.ReadWriteCloser, error) {
		<-gate
		local, far := prototest.SocketPair(t)
		local.SetWriteBuffer(4096)
		far.SetReadBuffer(4096)
		go func() {
			io.Copy(far, far)
			far.CloseWrite()
		}()
		return local, nil
	}
	mh, mg := socketMuxes(t, earlyConfig(1<<16, nil), earlyConfig(1<<16, accept))
	s, err := mh.Open(protocol.NetTCP, "a:1")
	if err != nil {
		t.Fatal(err)
	}
	var want []byte
	for i := 0; len(want) < 3*protocol.EarlyWindow; i++ {
		want = fmt.Appendf(want, "%07d,", i)
	}
	s.Write(want[:protocol.EarlyWindow])
	waitFor(t, func() bool { return buffered(mg) == protocol.EarlyWindow }, "early data buffered")
	go func() {
		close(gate)
		s.Write(want[protocol.EarlyWindow:])
		s.CloseWrite()
	}()
	if got := readAll(t, s); !bytes.Equal(got, want) {
		t.Fatalf("echoed %d bytes of %d, or out of order", len(got), len(want))
	}
}
