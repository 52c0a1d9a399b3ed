package client

import (
	"errors"
	"fmt"
	"io"
	"net"
	"slices"

	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/streams"
)

// ErrCannotForward is returned by an agent without CapForward: one that
// predates forwarding, or one serving with --forwarding=none.
var ErrCannotForward = errors.New("this corkd does not forward: update the corkd in the image (cork bake), or it serves with --forwarding=none")

// ForwardWindow is how many bytes cork buffers per stream before the local
// connection reads them.
const ForwardWindow = 256 << 10

// Forwarder carries connections to addresses in the guest, each on its own
// stream of one connection to corkd.
type Forwarder struct {
	m *streams.Mux
}

// Forward asks corkd on conn to carry streams whose guest ends connect as
// user, and returns the Forwarder that opens them. conn is the
// Forwarder's: Close closes it.
func Forward(conn io.ReadWriteCloser, software, user string) (*Forwarder, error) {
	r, w := protocol.NewReader(conn), protocol.NewWriter(conn)
	fw, err := startForward(r, w, software, user)
	if err != nil {
		conn.Close()
		return nil, err
	}
	m := streams.New(conn, r, w, streams.Config{Window: ForwardWindow, MaxStreams: fw.MaxStreams, Odd: true})
	go m.Run()
	return &Forwarder{m: m}, nil
}

// startForward says hello, sends the Forward request and reads its answer.
func startForward(r *protocol.Reader, w *protocol.Writer, software, user string) (*protocol.Forwarding, error) {
	h, err := Hello(r, w, software)
	if err != nil {
		return nil, err
	}
	if h.Version < 2 || !slices.Contains(h.Capabilities, protocol.CapForward) {
		return nil, fmt.Errorf("%s: %w", h.Software, ErrCannotForward)
	}
	if err := w.WriteJSON(protocol.TypeForward, &protocol.Forward{User: user}); err != nil {
		return nil, fmt.Errorf("sending the request: %w", err)
	}
	t, p, err := r.Next()
	switch {
	case err == io.EOF:
		return nil, errors.New("corkd closed the connection before answering the forward request")
	case err != nil:
		return nil, fmt.Errorf("waiting for corkd's answer: %w", err)
	case t == protocol.TypeError:
		return nil, decodeError(p)
	case t != protocol.TypeForwarding:
		return nil, fmt.Errorf("corkd answered the forward request with %s", t)
	}
	var fw protocol.Forwarding
	if err := protocol.Decode(t, p, &fw); err != nil {
		return nil, err
	}
	if fw.MaxStreams < 1 {
		return nil, fmt.Errorf("corkd allows %d streams per connection", fw.MaxStreams)
	}
	return &fw, nil
}

// Serve accepts connections on l until it is closed, and carries each to
// address in the guest (network protocol.NetTCP or protocol.NetUnix). A
// connection the guest cannot make is closed, and failed is told why; the
// others go on.
func (f *Forwarder) Serve(l net.Listener, network uint8, address string, failed func(error)) error {
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go func() {
			s, err := f.Dial(network, address)
			if err != nil {
				c.Close()
				failed(err)
				return
			}
			streams.Join(s, c, nil)
		}()
	}
}

// Dial opens one stream to address in the guest: a connection there, as
// the Forwarder's user.
func (f *Forwarder) Dial(network uint8, address string) (*streams.Stream, error) {
	return f.m.Open(network, address)
}

// Done is closed when the connection to corkd has ended; Err then says why.
func (f *Forwarder) Done() <-chan struct{} { return f.m.Done() }

// Err is why the connection to corkd ended.
func (f *Forwarder) Err() error { return f.m.Err() }

// Close ends every stream and the connection to corkd.
func (f *Forwarder) Close() error { return f.m.Close() }
