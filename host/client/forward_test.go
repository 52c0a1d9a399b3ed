package client

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/corkvm/cork/protocol"
)

// fakeForwardingAgent answers the hello and the Forward, then runs guest
// on the connection, in memory.
func fakeForwardingAgent(t *testing.T, guest func(r *protocol.Reader, w *protocol.Writer)) *Forwarder {
	t.Helper()
	return fakeAgentAllowing(t, 8, guest)
}

// fakeAgentAllowing is fakeForwardingAgent advertising maxStreams streams
// per connection.
func fakeAgentAllowing(t *testing.T, maxStreams int, guest func(r *protocol.Reader, w *protocol.Writer)) *Forwarder {
	t.Helper()
	return fakeForwardingAgentWith(t, maxStreams, []string{protocol.CapForward}, guest)
}

// fakeForwardingAgentWith is fakeAgentAllowing announcing caps.
func fakeForwardingAgentWith(t *testing.T, maxStreams int, caps []string, guest func(r *protocol.Reader, w *protocol.Writer)) *Forwarder {
	t.Helper()
	host, g := net.Pipe()
	hello := protocol.Hello{MinVersion: 1, MaxVersion: 2, Version: 2, Software: "fake", Capabilities: caps}
	serveHello(g, hello, func(r *protocol.Reader, w *protocol.Writer, typ protocol.Type, _ []byte) {
		if typ != protocol.TypeForward {
			return
		}
		w.WriteJSON(protocol.TypeForwarding, &protocol.Forwarding{MaxStreams: maxStreams})
		guest(r, w)
	})
	fw, err := Forward(host, "test", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fw.Close() })
	return fw
}

// A guest never chooses what the host connects to: a stream it opens
// naming an address, or a listener cork never asked for, is refused.
func TestForwardHostConnectsOnlyWhereItChose(t *testing.T) {
	reasons := make(chan string, 4)
	fakeForwardingAgent(t, func(r *protocol.Reader, w *protocol.Writer) {
		for i, open := range []protocol.StreamFrame{
			{ID: 2, Window: 1024, Network: protocol.NetTCP, Address: "127.0.0.1:22"},
			{ID: 4, Window: 1024, Network: protocol.NetUnix, Address: "/run/docker.sock"},
			{ID: 6, Window: 1024, Network: protocol.NetListener, Address: "7"},
			{ID: 8, Window: 1024, Network: protocol.NetAgent, Address: "/tmp/cork-agent-1/agent"},
		} {
			w.WriteFramed(protocol.AppendStream(nil, protocol.TypeStreamOpen, &open))
			typ, p, err := r.Next()
			if err != nil || typ != protocol.TypeStreamRefused {
				reasons <- "open " + string(rune('0'+i)) + " answered with " + typ.String()
				return
			}
			f, _ := protocol.DecodeStream(typ, p)
			reasons <- f.Reason
		}
	})
	for range 4 {
		select {
		case r := <-reasons:
			if !strings.Contains(r, "cork connects only for the guest listeners it asked for") && !strings.Contains(r, "asked for no guest listener 7") &&
				!strings.Contains(r, "not asked to forward the ssh agent") {
				t.Fatalf("refusal %q", r)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no answer within 10s")
		}
	}
}

// A guest cannot raise how many streams cork takes from it: its
// Forwarding's MaxStreams is clamped to cork's own limit.
func TestForwardHostLimitsTheGuestsStreams(t *testing.T) {
	result := make(chan string, 1)
	fw := fakeAgentAllowing(t, 1<<30, func(r *protocol.Reader, w *protocol.Writer) {
		if typ, _, err := r.Next(); err != nil || typ != protocol.TypeListen {
			result <- fmt.Sprintf("want a Listen, got %s, %v", typ, err)
			return
		}
		w.WriteJSON(protocol.TypeListening, &protocol.Listening{ID: 1, Address: "127.0.0.1:1"})
		for i := range MaxForwardStreams + 1 {
			open := protocol.StreamFrame{ID: uint32(2 * (i + 1)), Window: 1024, Network: protocol.NetListener, Address: "1"}
			w.WriteFramed(protocol.AppendStream(nil, protocol.TypeStreamOpen, &open))
			typ, p, err := r.Next()
			if err != nil {
				result <- err.Error()
				return
			}
			if typ == protocol.TypeStreamRefused {
				f, _ := protocol.DecodeStream(typ, p)
				result <- fmt.Sprintf("refused stream %d: %s", i+1, f.Reason)
				return
			}
		}
		result <- fmt.Sprintf("cork took %d streams", MaxForwardStreams+1)
	})
	if _, err := fw.Listen(0, func() (net.Conn, error) {
		c, _ := net.Pipe()
		return c, nil
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-result:
		if want := fmt.Sprintf("refused stream %d: at the limit of %d", MaxForwardStreams+1, MaxForwardStreams); !strings.HasPrefix(r, want) {
			t.Fatalf("%s; want %q", r, want)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no answer within 30s")
	}
}

// A unix socket is asked only of a corkd that announced it can make one:
// an older one would ignore the path and listen on a TCP port.
func TestForwardListenUnixNeedsTheCapability(t *testing.T) {
	for _, c := range []struct {
		caps []string
		want protocol.Listen // the first Listen the fake corkd gets
	}{
		{[]string{protocol.CapForward}, protocol.Listen{ID: 1, Port: 9000}},
		{[]string{protocol.CapForward, protocol.CapForwardListenUnix}, protocol.Listen{ID: 1, Path: "/run/x.sock"}},
	} {
		got := make(chan protocol.Listen, 1)
		fw := fakeForwardingAgentWith(t, 8, c.caps, func(r *protocol.Reader, w *protocol.Writer) {
			typ, p, err := r.Next()
			var l protocol.Listen
			if err == nil && typ == protocol.TypeListen && protocol.Decode(typ, p, &l) == nil {
				w.WriteJSON(protocol.TypeListening, &protocol.Listening{ID: l.ID, Address: "fake"})
			}
			got <- l
			r.Next()
		})
		_, err := fw.ListenUnix("/run/x.sock", nil)
		if c.want.Path == "" {
			if err == nil || !strings.Contains(err.Error(), "fake does not listen on unix sockets: update the corkd") {
				t.Fatalf("%v: %v", c.caps, err)
			}
			_, err = fw.Listen(9000, nil)
		}
		if err != nil {
			t.Fatalf("%v: %v", c.caps, err)
		}
		if l := <-got; l != c.want {
			t.Fatalf("%v: corkd got %+v, want %+v", c.caps, l, c.want)
		}
	}
}

// Reports that come before WatchPorts, or while its function runs, give
// way to the latest: cork's listeners follow the guest's current ports,
// and corkd's reader never waits for them.
func TestWatchPortsLatestWins(t *testing.T) {
	sent := make(chan struct{})
	fw := fakeForwardingAgent(t, func(r *protocol.Reader, w *protocol.Writer) {
		w.WriteJSON(protocol.TypePorts, &protocol.Ports{Ports: []protocol.Port{{Port: 3000, Host: "127.0.0.1"}}})
		w.WriteJSON(protocol.TypePorts, &protocol.Ports{Ports: []protocol.Port{{Port: 5173, Host: "::1"}}})
		// The refusal of a stream opened after them: both were read.
		w.WriteFramed(protocol.AppendStream(nil, protocol.TypeStreamOpen, &protocol.StreamFrame{ID: 2, Window: 1024, Network: protocol.NetTCP, Address: "127.0.0.1:22"}))
		r.Next()
		close(sent)
		r.Next()
	})
	select {
	case <-sent:
	case <-time.After(10 * time.Second):
		t.Fatal("the fake agent's reports were not read within 10s")
	}
	got := make(chan []protocol.Port, 2)
	fw.WatchPorts(func(p []protocol.Port) { got <- p })
	select {
	case p := <-got:
		if len(p) != 1 || p[0].Port != 5173 || p[0].Host != "::1" {
			t.Fatalf("first report taken: %v, want the latest", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no report within 10s")
	}
}
