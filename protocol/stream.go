package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Forwarding (capability CapForward, version 2): instead of Exec, the host
// sends Forward; once the guest answers Forwarding, the connection carries
// streams, each a byte stream in each direction with its own credit
// window and half close. See the package documentation for the exchange.

// CapForward announces Forward and the stream frames.
const CapForward = "forward"

// CapForwardAgent announces Forward.Agent: the guest serves an agent
// socket whose connections it opens as streams to the host (ssh -A).
const CapForwardAgent = "forward-agent"

// CapForwardWatch announces Forward.Watch: the guest reports the TCP
// ports its programs listen on (Ports), as lima's guest agent does.
const CapForwardWatch = "forward-watch"

// CapForwardListenUnix announces Listen.Path: the guest listens on a unix
// socket it makes (ssh -R /path.sock:...). A guest without it ignores the
// field and listens on a TCP port, so a host asks for a path only of a
// guest that announced it.
const CapForwardListenUnix = "forward-listen-unix"

// KindForward is an Error refusing a Forward: the agent does not forward
// (corkd serve --forwarding=none).
const KindForward = "forward"

// Forward asks the guest to carry streams on this connection. The guest's
// side of each stream runs as User (the same checks as an Exec's user).
type Forward struct {
	User string `json:"user,omitempty"`
	// Agent asks for an agent socket in the guest (CapForwardAgent), as
	// ssh -A: each connection made to it becomes a stream the guest
	// opens to the host (NetAgent), which connects it to its own agent.
	Agent bool `json:"agent,omitempty"`
	// AgentSession, with Agent, names a kept session (an id or a name)
	// whose SSH_AUTH_SOCK is an agent socket corkd made for it before:
	// the socket is made again there, as the session's user (cork
	// attach -A). User is then the session's.
	AgentSession string `json:"agent_session,omitempty"`
	// Watch asks for Ports frames (CapForwardWatch): the TCP ports that
	// programs in the guest listen on, sent again whenever they change.
	Watch bool `json:"watch,omitempty"`
	// EarlyData offers early data: the opener of a stream sends before
	// the answer. Both sides use it once Forwarding.EarlyData agrees.
	EarlyData bool `json:"early_data,omitempty"`
}

// Validate reports what is wrong with a Forward.
func (f *Forward) Validate() error {
	if strings.IndexByte(f.User, 0) >= 0 {
		return errors.New("forward: user contains a NUL byte")
	}
	return nil
}

// Forwarding is the guest's answer to Forward: the connection now carries
// streams, at most MaxStreams open at once.
type Forwarding struct {
	MaxStreams int `json:"max_streams"`
	// AgentSocket is the agent socket's path in the guest, when
	// Forward.Agent asked for one: the session's SSH_AUTH_SOCK.
	AgentSocket string `json:"agent_socket,omitempty"`
	// EarlyData agrees to Forward.EarlyData: from now on, both sides send
	// early data and take it.
	EarlyData bool `json:"early_data,omitempty"`
}

// Limits on stream frames.
const (
	// MaxStreamData is the most bytes one StreamData frame carries.
	MaxStreamData = 32 << 10
	// MaxStreamWindow is the largest credit window a side may give.
	MaxStreamWindow = 16 << 20
	// MaxStreamAddress bounds a StreamOpen's address: a host:port or a
	// unix socket's path.
	MaxStreamAddress = 4096
	// MaxStreamReason bounds a StreamRefused's reason.
	MaxStreamReason = 1024
	// EarlyWindow is how many bytes of StreamData the opener of a stream
	// sends before the answer, with early data; every window is then at
	// least this.
	EarlyWindow = 32 << 10
)

// Networks a StreamOpen names.
const (
	NetTCP  = 1 // Address is host:port
	NetUnix = 2 // Address is a unix socket's path
	// NetListener is a connection to one of the opener's listeners that
	// the other side asked for with Listen: Address is the Listen's id, in
	// decimal. The other side connects where it decided when it asked,
	// never where the opener says.
	NetListener = 3
	// NetAgent is a connection to the agent socket the guest made for
	// Forward.Agent: the other side connects to its own agent, and
	// Address (the socket's path in the guest) only names it.
	NetAgent = 4
)

// Listen asks the guest, on a connection that carries streams and with
// corkd serve --forwarding=all, to listen on Port of the guest's loopback
// (0: a free port the guest picks), or on a unix socket it makes at Path
// (CapForwardListenUnix), and open a stream (NetListener, ID) for each
// connection it accepts.
type Listen struct {
	ID   uint32 `json:"id"`
	Port uint16 `json:"port"`
	// Path, an absolute path, asks for a unix socket there instead of a
	// port; Port is then 0.
	Path string `json:"path,omitempty"`
}

// Validate reports what is wrong with a Listen.
func (l *Listen) Validate() error {
	switch {
	case l.ID == 0:
		return errors.New("listen: id 0: ids start at 1")
	case l.Path == "":
		return nil
	case l.Port != 0:
		return fmt.Errorf("listen: both port %d and a path", l.Port)
	case len(l.Path) > MaxStreamAddress:
		return fmt.Errorf("listen: a path of %d bytes, more than %d", len(l.Path), MaxStreamAddress)
	case !strings.HasPrefix(l.Path, "/"):
		return fmt.Errorf("listen: path %q is not absolute", l.Path)
	case strings.IndexByte(l.Path, 0) >= 0:
		return errors.New("listen: path contains a NUL byte")
	}
	return nil
}

// Listening answers a Listen: the address the guest listens on, or the
// Error that says why it does not.
type Listening struct {
	ID      uint32 `json:"id"`
	Address string `json:"address,omitempty"`
	Error   string `json:"error,omitempty"`
}

// Ports reports the TCP ports programs in the guest listen on, on its
// loopback or on every address, each with the loopback address that
// reaches it; a guest sends the whole set each time.
type Ports struct {
	Ports []Port `json:"ports"`
}

// Port is one listening port of a Ports report.
type Port struct {
	Port uint16 `json:"port"`
	Host string `json:"host"` // 127.0.0.1 or ::1
}

// MaxPorts bounds the ports of one Ports report.
const MaxPorts = 1024

// MaxListens bounds the Listens a guest keeps for one connection.
const MaxListens = 16

// StreamFrame is one stream frame, decoded. Which fields a type uses is in
// the package documentation's table.
type StreamFrame struct {
	ID      uint32
	Window  uint32 // StreamOpen, StreamOpened: the sender's receive window
	N       uint32 // StreamAck: bytes consumed
	Network uint8  // StreamOpen
	Address string // StreamOpen
	Reason  string // StreamRefused
	Data    []byte // StreamData; shares the payload's bytes
}

// IsStream reports whether t is a stream frame.
func (t Type) IsStream() bool { return t >= TypeStreamOpen && t <= TypeStreamClose }

// AppendStream appends to b a whole frame of type t carrying f.
func AppendStream(b []byte, t Type, f *StreamFrame) []byte {
	start := len(b)
	b = append(b, make([]byte, HeaderSize)...)
	b = binary.BigEndian.AppendUint32(b, f.ID)
	switch t {
	case TypeStreamOpen:
		b = binary.BigEndian.AppendUint32(b, f.Window)
		b = append(b, f.Network)
		b = binary.BigEndian.AppendUint16(b, uint16(len(f.Address)))
		b = append(b, f.Address...)
	case TypeStreamOpened:
		b = binary.BigEndian.AppendUint32(b, f.Window)
	case TypeStreamRefused:
		b = append(b, f.Reason...)
	case TypeStreamData:
		b = append(b, f.Data...)
	case TypeStreamAck:
		b = binary.BigEndian.AppendUint32(b, f.N)
	}
	PutHeader(b[start:], t, len(b)-start-HeaderSize)
	return b
}

// DecodeStream parses the payload p of a stream frame of type t, checking
// every length and value against the limits above.
func DecodeStream(t Type, p []byte) (StreamFrame, error) {
	var f StreamFrame
	if len(p) < 4 {
		return f, fmt.Errorf("protocol: %s payload has %d bytes, fewer than its stream id's 4", t, len(p))
	}
	f.ID, p = binary.BigEndian.Uint32(p), p[4:]
	if f.ID == 0 {
		return f, fmt.Errorf("protocol: %s names stream 0, which no stream has", t)
	}
	fixed := func(n int) error {
		if len(p) != n {
			return fmt.Errorf("protocol: %s payload has %d bytes after its stream id, want %d", t, len(p), n)
		}
		return nil
	}
	switch t {
	case TypeStreamOpen:
		return f, decodeOpen(&f, p)
	case TypeStreamOpened:
		if err := fixed(4); err != nil {
			return f, err
		}
		f.Window = binary.BigEndian.Uint32(p)
		return f, checkWindow(t, f.Window)
	case TypeStreamRefused:
		if len(p) > MaxStreamReason || !utf8.Valid(p) {
			return f, fmt.Errorf("protocol: %s reason is not UTF-8 of at most %d bytes", t, MaxStreamReason)
		}
		f.Reason = string(p)
	case TypeStreamData:
		if len(p) == 0 || len(p) > MaxStreamData {
			return f, fmt.Errorf("protocol: %s carries %d bytes; 1 to %d are allowed", t, len(p), MaxStreamData)
		}
		f.Data = p
	case TypeStreamAck:
		if err := fixed(4); err != nil {
			return f, err
		}
		f.N = binary.BigEndian.Uint32(p)
		if f.N == 0 || f.N > MaxStreamWindow {
			return f, fmt.Errorf("protocol: %s of %d bytes; 1 to %d are allowed", t, f.N, MaxStreamWindow)
		}
	case TypeStreamEOF, TypeStreamClose:
		return f, fixed(0)
	default:
		return f, fmt.Errorf("protocol: %s is not a stream frame", t)
	}
	return f, nil
}

func decodeOpen(f *StreamFrame, p []byte) error {
	if len(p) < 7 {
		return fmt.Errorf("protocol: %s payload has %d bytes after its stream id, at least 7 are needed", TypeStreamOpen, len(p))
	}
	f.Window, f.Network = binary.BigEndian.Uint32(p), p[4]
	n := int(binary.BigEndian.Uint16(p[5:]))
	p = p[7:]
	if err := checkWindow(TypeStreamOpen, f.Window); err != nil {
		return err
	}
	if f.Network < NetTCP || f.Network > NetAgent {
		return fmt.Errorf("protocol: %s names network %d; 1 (tcp), 2 (unix), 3 (a listener) and 4 (the agent) are known", TypeStreamOpen, f.Network)
	}
	if n != len(p) || n == 0 || n > MaxStreamAddress {
		return fmt.Errorf("protocol: %s address of %d bytes with %d present; 1 to %d are allowed", TypeStreamOpen, n, len(p), MaxStreamAddress)
	}
	if strings.IndexByte(string(p), 0) >= 0 {
		return fmt.Errorf("protocol: %s address contains a NUL byte", TypeStreamOpen)
	}
	f.Address = string(p)
	return nil
}

func checkWindow(t Type, w uint32) error {
	if w == 0 || w > MaxStreamWindow {
		return fmt.Errorf("protocol: %s window of %d bytes; 1 to %d are allowed", t, w, MaxStreamWindow)
	}
	return nil
}
