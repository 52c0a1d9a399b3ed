package agent

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"runtime"
	"time"

	"github.com/corkvm/cork/guest/account"
	"github.com/corkvm/cork/protocol"
	"github.com/corkvm/cork/protocol/copytree"
)

// copyRequest serves a CopyIn or a CopyOut: the agent does the file work
// itself, with no program started and nothing needed in the image, as the
// request's user. It counts as a session against the agent's limit.
func (s *Server) copyRequest(hs *handshake, t protocol.Type, p []byte, peer Peer) {
	var in protocol.CopyIn
	var out protocol.CopyOut
	var user string
	if t == protocol.TypeCopyIn {
		if !hs.request(t, p, &in) {
			return
		}
		user = in.User
	} else {
		if !hs.request(t, p, &out) {
			return
		}
		user = out.User
	}
	acct, perr := s.account(user, peer)
	if perr != nil {
		hs.refuse(perr.Kind, perr.Message)
		return
	}
	if !s.admit(hs) {
		return
	}
	defer s.sessionEnded()
	log := s.log.With("copy", newSessionID())

	done := make(chan struct{})
	go func() {
		defer close(done)
		// The thread takes the user's identity for the filesystem and
		// keeps it: it is never unlocked, so it ends with this goroutine
		// and no other work ever runs on it. New threads the runtime makes
		// meanwhile are made from a clean template, not from this one.
		runtime.LockOSThread()
		if err := actAs(acct); err != nil {
			log.Warn("copy refused", "user", acct.Name, "err", err)
			hs.refuse(protocol.KindUser, err.Error())
			return
		}
		problem := func(p []byte, msg string, skipped bool) {
			tellProblem(hs, &protocol.CopyProblem{Path: p, Message: msg, Skipped: skipped})
		}
		if t == protocol.TypeCopyIn {
			s.copyIn(hs, &in, acct, problem, log)
		} else {
			s.copyOut(hs, &out, acct, problem, log)
		}
	}()
	<-done
}

// tellProblem writes a copy's problem to the client with the deadline of
// other writes to clients: a client that stops reading them would hold
// the copy's thread for ever. It is cut off instead, which ends the copy.
func tellProblem(hs *handshake, pr *protocol.CopyProblem) {
	d, ok := hs.c.(interface{ SetWriteDeadline(time.Time) error })
	if ok {
		d.SetWriteDeadline(time.Now().Add(time.Duration(clientStall.Load())))
	}
	err := hs.w.WriteJSON(protocol.TypeCopyProblem, pr)
	if ok {
		d.SetWriteDeadline(time.Time{}) // a copy out's data writes follow
	}
	if err != nil {
		hs.c.Close()
	}
}

func (s *Server) copyIn(hs *handshake, req *protocol.CopyIn, acct *account.Account, problem func([]byte, string, bool), log *slog.Logger) {
	dest := inHome(req.Dest, acct)
	log.Info("copy in", "dest", string(dest), "user", acct.Name, "uid", acct.UID, "sources", req.Sources)
	if err := copytree.CheckSources(dest, req.Sources); err != nil {
		hs.refuse(protocol.KindCopy, err.Error())
		return
	}
	r := &copytree.Receiver{R: hs.r, Sink: &copytree.Dest{Path: dest, Sources: req.Sources, KeepOwners: req.KeepOwners}, Problem: problem}
	if _, err := r.Receive(); err != nil {
		log.Warn("copy in ended early", "files", r.Files, "bytes", r.Bytes, "err", err)
		var perr *protocol.Error
		if !errors.As(err, &perr) && !errors.Is(err, os.ErrClosed) {
			hs.w.WriteJSON(protocol.TypeError, &protocol.Error{Kind: protocol.KindProtocol, Message: err.Error()})
		}
		return
	}
	log.Info("copied in", "files", r.Files, "bytes", r.Bytes, "problems", r.Problems)
	hs.w.WriteJSON(protocol.TypeCopyDone, &protocol.CopyDone{Files: r.Files, Bytes: r.Bytes, Problems: r.Problems})
}

func (s *Server) copyOut(hs *handshake, req *protocol.CopyOut, acct *account.Account, problem func([]byte, string, bool), log *slog.Logger) {
	log.Info("copy out", "paths", len(req.Paths), "user", acct.Name, "uid", acct.UID)
	snd := &copytree.Sender{W: hs.w, Follow: req.Follow, Hardlinks: req.Hardlinks, Chunk: dataFrameSize, Problem: problem}
	for _, p := range req.Paths {
		if err := snd.Send(string(inHome(p, acct))); err != nil {
			log.Warn("copy out ended early", "files", snd.Files, "bytes", snd.Bytes, "err", err)
			return
		}
	}
	log.Info("copied out", "files", snd.Files, "bytes", snd.Bytes, "problems", snd.Problems)
	hs.w.WriteJSON(protocol.TypeCopyDone, &protocol.CopyDone{Files: snd.Files, Bytes: snd.Bytes, Problems: snd.Problems})
}

// inHome makes a relative guest path relative to the user's home, as scp
// takes one. The agent's own working directory is no one's.
func inHome(p []byte, acct *account.Account) []byte {
	if len(p) > 0 && p[0] == '/' {
		return p
	}
	home := []byte(acct.Home)
	if len(p) == 0 || bytes.Equal(p, []byte(".")) {
		return home
	}
	return append(append(append([]byte{}, bytes.TrimRight(home, "/")...), '/'), p...)
}
