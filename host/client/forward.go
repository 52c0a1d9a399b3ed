package client

import (
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"

	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/streams"
)

// ErrCannotForward is returned by an agent without CapForward: one that
// predates forwarding, or one serving with --forwarding=none.
var ErrCannotForward = errors.New("this corkd does not forward: update the corkd in the image (cork bake), or it serves with --forwarding=none")

// ForwardWindow is how many bytes cork buffers per stream before the local
// connection reads them.
const ForwardWindow = 256 << 10

// MaxForwardStreams bounds the streams cork keeps open on one connection,
// whatever corkd says it allows: a guest must not decide how much of the
// host's memory its streams take.
const MaxForwardStreams = 1024

// Forwarder carries connections to addresses in the guest, each on its own
// stream of one connection to corkd.
type Forwarder struct {
	m     *streams.Mux
	hello *protocol.Hello // corkd's: what it can do

	agent       func() (net.Conn, error) // dials the host's agent, for ForwardAgent
	agentSocket string
	early       bool // both sides agreed to early data: Open does not wait

	mu      sync.Mutex
	nextID  uint32
	remotes map[uint32]*remote // by Listen id

	// ports is corkd's latest Ports report not yet taken by WatchPorts's
	// goroutine, which portsReady wakes: a report replaces one pending,
	// and corkd's reader never waits for cork's listeners.
	ports      *protocol.Ports
	portsReady chan struct{}
}

// remote is a guest listener cork asked for (a remote forward).
type remote struct {
	dial   func() (net.Conn, error)
	answer chan *protocol.Listening
}

// Forward asks corkd on conn to carry streams whose guest ends connect as
// user, and returns the Forwarder that opens them. conn is the
// Forwarder's: Close closes it.
func Forward(conn io.ReadWriteCloser, software, user string) (*Forwarder, error) {
	return forward(conn, software, &protocol.Forward{User: user}, nil)
}

// ForwardWatching is Forward that also asks corkd for the guest's
// listening ports (cork forward --auto): WatchPorts takes them.
func ForwardWatching(conn io.ReadWriteCloser, software, user string) (*Forwarder, error) {
	return forward(conn, software, &protocol.Forward{User: user, Watch: true}, nil)
}

// ForwardAgent is Forward that also asks corkd for an agent socket in the
// guest, as ssh -A: each connection made to it there is carried to what
// agent dials on the host. AgentSocket is the socket's path, for the
// SSH_AUTH_SOCK of a session; it lasts as long as the Forwarder.
func ForwardAgent(conn io.ReadWriteCloser, software, user string, agent func() (net.Conn, error)) (*Forwarder, error) {
	return forward(conn, software, &protocol.Forward{User: user, Agent: true}, agent)
}

// ForwardAgentTo is ForwardAgent for the kept session named session (an
// id or a name) that cork exec -A started (cork attach -A): corkd makes
// the socket again where the session's SSH_AUTH_SOCK says.
func ForwardAgentTo(conn io.ReadWriteCloser, software, session string, agent func() (net.Conn, error)) (*Forwarder, error) {
	return forward(conn, software, &protocol.Forward{Agent: true, AgentSession: session}, agent)
}

func forward(conn io.ReadWriteCloser, software string, req *protocol.Forward, agent func() (net.Conn, error)) (*Forwarder, error) {
	req.EarlyData = true
	r, w := protocol.NewReader(conn), protocol.NewWriter(conn)
	h, fw, err := startForward(r, w, software, req)
	if err != nil {
		conn.Close()
		return nil, err
	}
	f := &Forwarder{hello: h, remotes: map[uint32]*remote{}, agent: agent, agentSocket: fw.AgentSocket, early: fw.EarlyData, portsReady: make(chan struct{}, 1)}
	f.m = streams.New(conn, r, w, streams.Config{Window: ForwardWindow, MaxStreams: min(fw.MaxStreams, MaxForwardStreams), Odd: true,
		Accept: f.accept, Control: f.control, Early: fw.EarlyData})
	go f.m.Run()
	return f, nil
}

// startForward says hello, sends the Forward request and reads its
// answer. It returns corkd's hello and answer.
func startForward(r *protocol.Reader, w *protocol.Writer, software string, req *protocol.Forward) (*protocol.Hello, *protocol.Forwarding, error) {
	h, err := Hello(r, w, software)
	if err != nil {
		return nil, nil, err
	}
	fw, err := askForward(r, w, h, req)
	return h, fw, err
}

// askForward sends the Forward request to the corkd that said h, and
// reads its answer.
func askForward(r *protocol.Reader, w *protocol.Writer, h *protocol.Hello, req *protocol.Forward) (*protocol.Forwarding, error) {
	if h.Version < 2 || !slices.Contains(h.Capabilities, protocol.CapForward) {
		return nil, fmt.Errorf("%s: %w", h.Software, ErrCannotForward)
	}
	if req.Watch && !slices.Contains(h.Capabilities, protocol.CapForwardWatch) {
		return nil, fmt.Errorf("%s does not report the guest's listening ports: update the corkd in the image (cork bake)", h.Software)
	}
	if req.Agent && !slices.Contains(h.Capabilities, protocol.CapForwardAgent) {
		return nil, fmt.Errorf("%s does not forward the ssh agent: update the corkd in the image (cork bake)", h.Software)
	}
	if err := w.WriteJSON(protocol.TypeForward, req); err != nil {
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
	if req.Agent && fw.AgentSocket == "" {
		return nil, errors.New("corkd answered the request for agent forwarding with no socket")
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
		if !f.early {
			// Open waits for the guest's answer: one slow dial must not
			// hold back the connections behind it.
			go func() {
				s, err := f.m.Open(network, address)
				f.carry(s, c, err, failed)
			}()
			continue
		}
		// With early data Open does not wait, and opening here sends the
		// open and the request before this goroutine waits again; a
		// stalled connection to corkd leaves new clients in the kernel's
		// backlog, not in goroutines that each hold one.
		s, err := f.m.OpenFor(network, address, c)
		go f.carry(s, c, err, failed)
	}
}

// carry joins c to s, the stream opened for it, or closes c when the open
// failed with err.
func (f *Forwarder) carry(s *streams.Stream, c net.Conn, err error, failed func(error)) {
	if err != nil {
		c.Close()
		failed(err)
		return
	}
	streams.Join(s, c, nil)
	if err := s.Answer(); err != nil {
		failed(err) // early data: the refusal ended the join
	}
}

// Dial opens one stream to address in the guest, a connection there as
// the Forwarder's user, and returns it once the guest has connected it.
func (f *Forwarder) Dial(network uint8, address string) (*streams.Stream, error) {
	s, err := f.m.Open(network, address)
	if err != nil {
		return nil, err
	}
	if err := s.Answer(); err != nil {
		return nil, err
	}
	return s, nil
}

// Listen asks corkd to listen on port of the guest's loopback (corkd
// serve --forwarding=all) and carries each connection made there to what
// dial connects to on the host. It returns the guest's address.
func (f *Forwarder) Listen(port uint16, dial func() (net.Conn, error)) (string, error) {
	return f.listen(&protocol.Listen{Port: port}, dial)
}

// ListenUnix is Listen on a unix socket corkd makes at path in the guest,
// as the Forwarder's user and mode 0600 (ssh -R /path.sock:...); corkd
// replaces nothing already at path, and removes the socket when the
// Forwarder closes.
func (f *Forwarder) ListenUnix(path string, dial func() (net.Conn, error)) (string, error) {
	// A corkd without the capability would ignore the path and listen on
	// a TCP port instead.
	if !slices.Contains(f.hello.Capabilities, protocol.CapForwardListenUnix) {
		return "", fmt.Errorf("%s does not listen on unix sockets: update the corkd in the image (cork bake)", f.hello.Software)
	}
	return f.listen(&protocol.Listen{Path: path}, dial)
}

// listen sends req, with an id of its own, and waits for its answer.
func (f *Forwarder) listen(req *protocol.Listen, dial func() (net.Conn, error)) (string, error) {
	f.mu.Lock()
	f.nextID++
	req.ID = f.nextID
	id := req.ID
	if err := req.Validate(); err != nil {
		f.mu.Unlock()
		return "", err // corkd would end the connection for it
	}
	rm := &remote{dial: dial, answer: make(chan *protocol.Listening, 1)}
	f.remotes[id] = rm
	f.mu.Unlock()
	if err := f.m.WriteJSON(protocol.TypeListen, req); err != nil {
		return "", err
	}
	select {
	case a := <-rm.answer:
		if a.Error != "" {
			f.mu.Lock()
			delete(f.remotes, id)
			f.mu.Unlock()
			return "", errors.New(a.Error)
		}
		return a.Address, nil
	case <-f.m.Done():
		return "", fmt.Errorf("the connection to corkd ended: %w", f.m.Err())
	}
}

// control takes corkd's answers to Listen.
func (f *Forwarder) control(t protocol.Type, p []byte) error {
	if t == protocol.TypePorts {
		return f.portsReport(p)
	}
	if t != protocol.TypeListening {
		return fmt.Errorf("protocol: %s from corkd", t)
	}
	var a protocol.Listening
	if err := protocol.Decode(t, p, &a); err != nil {
		return err
	}
	f.mu.Lock()
	rm := f.remotes[a.ID]
	f.mu.Unlock()
	if rm == nil {
		return fmt.Errorf("protocol: corkd answered listen %d, which cork never sent", a.ID)
	}
	select {
	case rm.answer <- &a:
		return nil
	default:
		return fmt.Errorf("protocol: corkd answered listen %d twice", a.ID)
	}
}

// accept connects a stream from a guest listener to where its remote
// forward goes. The guest names only which listener: it never chooses
// what the host connects to.
func (f *Forwarder) accept(network uint8, address string) (io.ReadWriteCloser, error) {
	if network == protocol.NetAgent {
		if f.agent == nil {
			return nil, errors.New("cork was not asked to forward the ssh agent (cork exec -A)")
		}
		return f.agent()
	}
	id, err := strconv.ParseUint(address, 10, 32)
	if network != protocol.NetListener || err != nil {
		return nil, errors.New("cork connects only for the guest listeners it asked for")
	}
	f.mu.Lock()
	rm := f.remotes[uint32(id)]
	f.mu.Unlock()
	if rm == nil {
		return nil, fmt.Errorf("cork asked for no guest listener %d", id)
	}
	return rm.dial()
}

// portsReport keeps corkd's latest Ports for WatchPorts.
func (f *Forwarder) portsReport(p []byte) error {
	var ports protocol.Ports
	if err := protocol.Decode(protocol.TypePorts, p, &ports); err != nil {
		return err
	}
	if len(ports.Ports) > protocol.MaxPorts {
		return fmt.Errorf("protocol: corkd reported %d ports, more than %d", len(ports.Ports), protocol.MaxPorts)
	}
	f.mu.Lock()
	f.ports = &ports
	f.mu.Unlock()
	select {
	case f.portsReady <- struct{}{}:
	default:
	}
	return nil
}

// WatchPorts calls fn with the guest's listening ports, after
// ForwardWatching: the latest report at once if there is one, then each
// later one, in order, from one goroutine, until the connection ends. A
// report that comes while fn runs replaces any still waiting.
func (f *Forwarder) WatchPorts(fn func([]protocol.Port)) {
	go func() {
		for {
			select {
			case <-f.portsReady:
			case <-f.m.Done():
				return
			}
			f.mu.Lock()
			ports := f.ports
			f.ports = nil
			f.mu.Unlock()
			if ports != nil {
				fn(ports.Ports)
			}
		}
	}()
}

// AgentSocket is the agent socket's path in the guest, after ForwardAgent.
func (f *Forwarder) AgentSocket() string { return f.agentSocket }

// Done is closed when the connection to corkd has ended; Err then says why.
func (f *Forwarder) Done() <-chan struct{} { return f.m.Done() }

// Err is why the connection to corkd ended.
func (f *Forwarder) Err() error { return f.m.Err() }

// Close ends every stream and the connection to corkd.
func (f *Forwarder) Close() error { return f.m.Close() }
