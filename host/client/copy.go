package client

import (
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/copytree"
)

// Copy copies files between the host and the guest through the agent, as
// docker cp does: the agent does the guest's side itself, as User.
type Copy struct {
	Software   string
	User       string
	KeepOwners bool // cork cp -a
	Follow     bool // cork cp -L
	// Problem is told about each thing not copied, by either side, named
	// as the user wrote it or as at the destination; skipped marks what
	// is left out by design (a device, a FIFO, a socket).
	Problem func(path []byte, message string, skipped bool)
	// Progress, when set, is called as entries and bytes go by.
	Progress func(files int, bytes int64)
}

// CopyResult is what a copy did.
type CopyResult struct {
	Files    int   // files and links that landed (directories are not counted)
	Bytes    int64 // the bytes of the files that landed
	Problems int   // things not copied, skips aside
}

// ErrCannotCopy is returned by an agent without CapCopy.
var ErrCannotCopy = errors.New("this corkd cannot copy files: update the corkd in the image (cork bake)")

// hello says hello and checks that the agent can copy; it returns
// the agent's hello.
func (c *Copy) hello(r *protocol.Reader, w *protocol.Writer) (*protocol.Hello, error) {
	h, err := Hello(r, w, c.Software)
	if err != nil {
		return nil, err
	}
	if h.Version < 2 || !slices.Contains(h.Capabilities, protocol.CapCopy) {
		return nil, fmt.Errorf("%s: %w", h.Software, ErrCannotCopy)
	}
	return h, nil
}

// In sends what send writes (trees of files) to dest in the guest, over
// conn, which it closes. send gets the Sender to use and the number of
// trees it will send is given as sources. When the agent ends the copy
// first (it refuses the user, say), In returns its reason at once: send
// may then still be waiting for its source, and its writes fail.
func (c *Copy) In(conn io.ReadWriteCloser, dest []byte, sources int, send func(*copytree.Sender) error) (*CopyResult, error) {
	defer conn.Close()
	r, w := protocol.NewReader(conn), protocol.NewWriter(conn)
	h, err := c.hello(r, w)
	if err != nil {
		return nil, err
	}
	if err := w.WriteJSON(protocol.TypeCopyIn, &protocol.CopyIn{Dest: dest, Sources: sources, User: c.User, KeepOwners: c.KeepOwners}); err != nil {
		return nil, fmt.Errorf("sending the request: %w", err)
	}
	// The agent's problems and its answer are read while the trees go:
	// it writes as it receives, and a reader that waited would stop it.
	answered := make(chan copyAnswer, 1)
	go func() { answered <- c.readAnswer(r, conn) }()
	s := &copytree.Sender{W: w, Follow: c.Follow, Problem: c.Problem, Progress: c.Progress,
		Hardlinks: slices.Contains(h.Capabilities, protocol.CapCopyHardlinks)}
	sent := make(chan sendResult, 1)
	sendEnded := make(chan struct{})
	go func() { sendTrees(s, w, conn, send, sendEnded, sent) }()

	res, a, err := settle(conn, sent, answered, sendEnded)
	if err != nil {
		return nil, err
	}
	if a.err != nil && (a.told || !res.hostFault) {
		return nil, a.err // the agent's reason comes before the broken connection it caused
	}
	if res.err != nil {
		return nil, res.err
	}
	return &CopyResult{Files: a.done.Files, Bytes: a.done.Bytes, Problems: s.Problems + a.problems}, nil
}

// settle waits for both halves of a copy in: the host's send and the
// agent's answer. An answer that comes while send still runs ends the
// copy at once: the agent refused it, or, for a CopyDone, broke the
// protocol (it cannot have received the copy), and send may be waiting
// for its source or blocked on a peer that no longer reads. An answer
// after send returned is to the CopyDone or Error the sender is writing,
// which the agent has read or never will: the connection is closed before
// the sender is waited for, so that its last write cannot block.
func settle(conn io.Closer, sent <-chan sendResult, answered <-chan copyAnswer, sendEnded <-chan struct{}) (sendResult, copyAnswer, error) {
	var a copyAnswer
	select {
	case res := <-sent:
		return res, <-answered, nil
	case a = <-answered:
	}
	select {
	case <-sendEnded:
		conn.Close()
		return <-sent, a, nil
	default:
	}
	conn.Close()
	if a.err == nil {
		return sendResult{}, a, errors.New("copy: corkd answered before the copy was sent (a protocol error)")
	}
	return sendResult{}, a, a.err
}

// sendResult is how the host's part of a copy in ended.
type sendResult struct {
	err       error
	hostFault bool // the send failed on this side (a bad tar stream), not on the connection
}

// sendTrees runs send, closes sendEnded, then ends the host's part with
// CopyDone. When send
// fails on this side the agent is still waiting for trees: it is told why
// none come, so that it drops the file it was writing, and conn is closed
// so that the answer's reader stops waiting for an answer that will not
// come; the result is on sent before that. When the connection failed,
// what the agent said before it is still there to read.
func sendTrees(s *copytree.Sender, w *protocol.Writer, conn io.Closer, send func(*copytree.Sender) error, sendEnded chan<- struct{}, sent chan<- sendResult) {
	err := send(s)
	close(sendEnded)
	if err == nil {
		sent <- sendResult{err: w.WriteJSON(protocol.TypeCopyDone, &protocol.CopyDone{Files: s.Files, Bytes: s.Bytes, Problems: s.Problems})}
		return
	}
	told := w.WriteJSON(protocol.TypeError, &protocol.Error{Kind: protocol.KindCopy, Message: err.Error()}) == nil
	sent <- sendResult{err: err, hostFault: told}
	if told {
		conn.Close()
	}
}

// copyAnswer is what the agent said to a copy in: its CopyDone, or why
// there is none.
type copyAnswer struct {
	done     *protocol.CopyDone
	problems int
	err      error
	told     bool // err is the agent's own reason, not a connection that ended
}

// readAnswer reads the agent's problems, telling each to c.Problem, until
// its answer. When there is no CopyDone it closes conn, so that a sender
// blocked on a full connection gives up.
func (c *Copy) readAnswer(r *protocol.Reader, conn io.Closer) (a copyAnswer) {
	defer func() {
		if a.err != nil {
			conn.Close()
		}
	}()
	for {
		t, p, err := r.Next()
		if err != nil {
			a.err = fmt.Errorf("copy: the connection to corkd ended before it answered: %w", err)
			return a
		}
		switch t {
		case protocol.TypeCopyProblem:
			var pr protocol.CopyProblem
			if a.err = protocol.Decode(t, p, &pr); a.err != nil {
				return a
			}
			if !pr.Skipped {
				a.problems++
			}
			if c.Problem != nil {
				c.Problem(pr.Path, pr.Message, pr.Skipped)
			}
		case protocol.TypeCopyDone:
			a.done = &protocol.CopyDone{}
			a.err = protocol.Decode(t, p, a.done)
			return a
		case protocol.TypeError:
			a.err, a.told = decodeError(p), true
			return a
		default:
			a.err = fmt.Errorf("copy: corkd sent %s", t)
			return a
		}
	}
}

// Out receives the trees at paths in the guest into sink, over conn,
// which it closes.
func (c *Copy) Out(conn io.ReadWriteCloser, paths [][]byte, sink copytree.Sink) (*CopyResult, error) {
	defer conn.Close()
	r, w := protocol.NewReader(conn), protocol.NewWriter(conn)
	if _, err := c.hello(r, w); err != nil {
		return nil, err
	}
	if err := w.WriteJSON(protocol.TypeCopyOut, &protocol.CopyOut{Paths: paths, User: c.User, Follow: c.Follow, Hardlinks: true}); err != nil {
		return nil, fmt.Errorf("sending the request: %w", err)
	}
	rc := &copytree.Receiver{R: r, Sink: sink, Problem: c.Problem, Progress: c.Progress, SenderProblems: true}
	if _, err := rc.Receive(); err != nil {
		return nil, err
	}
	return &CopyResult{Files: rc.Files, Bytes: rc.Bytes, Problems: rc.Problems}, nil
}
