package client

import (
	"io"

	"github.com/corkvm/cork/protocol"
)

// sendStdin copies in to the session within the stdin window, then sends
// StdinEOF when in ends. Input typed while a kept session reconnects is
// dropped, as over any connection that breaks.
func sendStdin(l *link, in io.Reader, c *credit) {
	// Input is read straight after a frame header and goes out in one
	// write without a copy. Frames as large as the agent's output frames
	// keep the acks and wake-ups per byte as few as output's.
	const chunk = 128 << 10
	frame := protocol.NewDataFrame(chunk)
	for {
		n, gen := c.take(chunk)
		if n == 0 {
			return // the session is over
		}
		m, err := in.Read(frame[protocol.HeaderSize : protocol.HeaderSize+n])
		c.putBack(n-m, gen)
		if m > 0 {
			protocol.PutHeader(frame, protocol.TypeStdin, m)
			if !sendInput(l, c, frame[:protocol.HeaderSize+m], gen) {
				return
			}
		}
		if err != nil {
			l.write(protocol.TypeStdinEOF, nil, true)
			return
		}
	}
}

// sendInput sends frame, stdin read on credit from connection gen's
// window. When the connection was replaced while the input was read (a
// resume), the input goes on the new one instead, on credit from the new
// window: the agent treats input beyond its window as a protocol error.
// It reports false when the session is over.
func sendInput(l *link, c *credit, frame []byte, gen int) bool {
	err := l.writeFramedOn(frame, gen)
	if err != errStale {
		return err == nil || l.resumable()
	}
	stale, data := gen, frame[protocol.HeaderSize:]
	for len(data) > 0 {
		n, g := c.take(len(data))
		if n == 0 {
			return false
		}
		if g == stale {
			// The new connection's window is not known yet.
			c.putBack(n, g)
			if !c.waitPast(stale) {
				return false
			}
			continue
		}
		part := make([]byte, protocol.HeaderSize+n)
		copy(part[protocol.HeaderSize:], data[:n])
		protocol.PutHeader(part, protocol.TypeStdin, n)
		switch err := l.writeFramedOn(part, g); {
		case err == errStale:
			stale = g
		case err != nil:
			return l.resumable()
		default:
			data = data[n:]
		}
	}
	return true
}
