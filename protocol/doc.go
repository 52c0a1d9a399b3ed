// Package protocol is the wire format spoken between cork (the host) and
// corkd (the guest agent). It only encodes and decodes; it makes no OS calls.
//
// # Frames
//
// A connection carries a stream of frames in each direction. A frame is a
// five-byte header followed by a payload:
//
//	offset  size  field
//	0       1     type     (one of the Type constants below)
//	1       4     length   payload length in bytes, unsigned big-endian
//	5       n     payload
//
// The length is at most MaxPayload (1 MiB); a guest may be configured to
// accept less, never under 64 KiB, so a host keeps stdin frames small (cork
// sends at most 32 KiB). A reader checks the type and the length before it
// allocates anything; a frame of an unknown type or an oversize length is a
// protocol error and ends the connection.
//
// # Payloads
//
// Data frames (Stdin, Stdout, Stderr) carry raw bytes. Resize and StdinAck
// carry fixed binary fields. Every other control frame carries one JSON
// object, UTF-8, with the fields listed in the Go types below (json tags are
// the wire names; unknown fields are ignored, missing ones are zero).
//
//	type  name       direction     payload
//	0x01  Hello      both          JSON Hello
//	0x02  Exec       host->guest   JSON Exec
//	0x03  Started    guest->host   JSON Started
//	0x04  Ping       host->guest   opaque bytes (at most 64), echoed in Pong
//	0x05  Pong       guest->host   the Ping's bytes
//	0x06  Attach     host->guest   JSON Attach (version 2)
//	0x07  Attached   guest->host   JSON Attached (version 2)
//	0x08  List       host->guest   empty (version 2)
//	0x09  Sessions   guest->host   JSON Sessions (version 2)
//	0x0a  Kill       host->guest   JSON Kill (version 2)
//	0x0b  Remove     host->guest   JSON Remove (version 2)
//	0x0c  Done       guest->host   JSON Done, the answer to Kill and Remove (version 2)
//	0x0d  Peek       host->guest   JSON Peek (version 2)
//	0x0e  Snapshot   guest->host   JSON Snapshot, the answer to Peek (version 2)
//	0x10  Stdin      host->guest   raw bytes for the program's input
//	0x11  StdinEOF   host->guest   empty
//	0x12  Stdout     guest->host   raw bytes (a PTY session's merged output)
//	0x13  Stderr     guest->host   raw bytes (pipe sessions only)
//	0x14  StdinAck   guest->host   4 bytes: uint32 big-endian, stdin bytes consumed
//	0x15  Restore    guest->host   raw bytes: a kept session's screen drawn for the host's terminal (version 2)
//	0x16  CopyIn     host->guest   JSON CopyIn (CapCopy)
//	0x17  CopyOut    host->guest   JSON CopyOut (CapCopy)
//	0x18  CopyRoot   both          binary Entry: a tree's root (CapCopy)
//	0x19  CopyEntry  both          binary Entry beneath the root (CapCopy)
//	0x1a  CopyData   both          raw bytes of the file whose entry came last (CapCopy)
//	0x1b  CopyEnd    both          JSON CopyEnd: the file's data is over (CapCopy)
//	0x1c  CopyProblemguest->host   JSON CopyProblem (CapCopy)
//	0x1d  CopyDone   both          JSON CopyDone (CapCopy)
//	0x20  Resize     host->guest   8 bytes: cols, rows, xpixel, ypixel, each uint16 big-endian
//	0x21  Signal     host->guest   JSON Signal
//	0x30  Exit       guest->host   JSON Exit; the last frame of a session
//	0x31  Error      guest->host   JSON Error; the last frame of a session
//	0x32  Detached   guest->host   JSON Detached; the last frame (version 2)
//	0x80  Forward    host->guest   JSON Forward (CapForward)
//	0x81  Forwarding guest->host   JSON Forwarding, the answer to Forward (CapForward)
//	0x82  StreamOpen     both      binary: id, window, network, address (CapForward)
//	0x83  StreamOpened   both      binary: id, window (CapForward)
//	0x84  StreamRefused  both      binary: id, then the reason, UTF-8 (CapForward)
//	0x85  StreamData     both      binary: id, then raw bytes (CapForward)
//	0x86  StreamAck      both      binary: id, bytes consumed (CapForward)
//	0x87  StreamEOF      both      binary: id (CapForward)
//	0x88  StreamClose    both      binary: id (CapForward)
//	0x89  Listen     host->guest   JSON Listen (CapForward, --forwarding=all; Path: CapForwardListenUnix)
//	0x8a  Listening  guest->host   JSON Listening, the answer to Listen (CapForward)
//	0x8b  Ports      guest->host   JSON Ports, the guest's listening ports (CapForwardWatch)
//
// # A session
//
// The host opens with Hello, giving the range of protocol versions it speaks
// (MinVersion..MaxVersion) and its capabilities. The guest answers with its
// own Hello whose Version field is the highest version both speak, or, when
// the ranges do not overlap, with an Error of kind "version" naming both
// ranges, and closes. This version of the package speaks versions 1 and 2;
// version 2 adds kept sessions (below) and announces CapKeep. A version-1
// peer runs plain sessions with a version-2 one. A Hello payload is at most
// 4 KiB: corkd refuses a larger one before reading it.
//
// The host then sends either Ping frames (each answered by a Pong; used to
// measure round-trip time and to read the agent's version from its Hello) or
// one Exec. After Exec the guest answers Started, carrying a session id and
// the stdin window, or an Error (unknown user, bad working directory, bad
// request) and closes. A program that is not found or not executable is not
// an Error: it is reported the way a shell does, a message on the session's
// error output and Exit with code 127 or 126.
//
// Stdin is flow controlled so that a program that does not read its input
// never delays a Resize or a Signal queued behind a paste: the host keeps the
// number of stdin bytes sent but not yet acknowledged by StdinAck at or below
// Started.StdinWindow. A guest refuses a host that overruns it.
//
// StdinEOF closes the program's stdin (pipe sessions) or types the terminal's
// VEOF character (PTY sessions). Resize and Signal are fire and forget; a
// Resize on a pipe session, or with a zero width or height, is ignored, and
// columns or rows above MaxWindowDim (4096) are clamped to it. Signal names
// outside Signals are ignored. The guest sends Exit after the last
// output byte, once the program has been reaped and its output drained (a
// background process that keeps the output open is not waited for beyond a
// short deadline). Exit's Code is the exit status, or 128+N when the program
// was killed by signal N. A connection that ends before Exit or Error means
// the session's status is unknown, and the host must not report success.
//
// When the connection drops, the guest sends SIGHUP to the session's
// processes, then SIGKILL after a grace period.
//
// A connection carries one session.
//
// # Kept sessions (version 2)
//
// An Exec with Keep (a TTY session) asks for a session that outlives its
// connection: when the connection drops the guest detaches it instead of
// hanging it up, keeps reading the program's output (the last bytes of it
// in a bounded buffer, numbered from the session's start) and keeps the
// program's exit status once it ends. Started says Kept, and gives the
// session's id (and Name, when one was asked for; names are unique per
// owner uid, at most 64 bytes, with no slash, NUL or control character,
// and unlike an id). A kept session that stays detached for its linger
// (Exec.LingerSeconds; 0: the agent's default, negative: forever) is hung
// up; an exited one is forgotten after its linger unless a client saw the
// exit, which forgets it at once. By the time a client reads Started, the
// session can be found by its id and name: an Attach sent at once on
// another connection reaches it.
//
// An Exec with Keep, Name and AttachExisting is create-or-attach, as
// tmux's new-session -A: when the peer has a session of that name, running
// or exited, the guest answers as to an Attach of it (no Resume, Size from
// the Exec; Attached, not Started) and the rest of the Exec is unused;
// otherwise it starts the program. Of two such requests at once for one
// name, one starts the program and the other attaches to it.
//
// Instead of Exec, a version-2 host may send one of these requests:
//
//   - Attach names a kept session by id, by a name of the peer's own, or,
//     for another uid's session, OWNER/NAME (OWNER a user name or a uid;
//     Attached.Name is then OWNER/NAME too). The guest answers
//     Attached, then output frames, then drives the session from the
//     connection as after Started (Stdin, StdinAck, Resize, Signal, Ping,
//     then Exit). The first output byte that follows Attached is byte
//     Attached.From of the session's output; each output frame's bytes
//     continue from there. When Attach.Resume is set (the count of output
//     bytes the host has seen) and the guest still holds the bytes from
//     there, From equals it and Resumed is true: nothing is lost or sent
//     twice. Otherwise From is the current end of the output, and the
//     guest sends Restore frames, in order (more than one only when the
//     drawing outgrows a frame): bytes that draw the session's screen,
//     as the guest keeps it from the output, on a terminal of Attach.Size
//     (reset, the alternate screen if in use, lines scrolled off, the
//     screen with colours and styles, the cursor, the input modes, the
//     window title). The
//     lines scrolled off are left out when Attach.Terminal names the
//     terminal of the last client that drove the session (its
//     Exec.Terminal or Attach.Terminal) and the program has written no
//     output since that client left: that terminal holds them already.
//     Restore bytes are written to the terminal like output but are not
//     output: they do not count in From's numbering. Then the guest makes the
//     program repaint itself: it sets the terminal one column wider, then,
//     about 50 ms later, to Attach.Size (or the size it had), since the
//     kernel signals no size that does not change. A Resume beyond the
//     output written so far is an Error of kind "request". When the
//     program has already exited, Running is false and the guest sends its
//     last screen (Restore) and Exit. A second client attaching takes the
//     session over: the first gets a Detached frame, its last. Of two
//     attaches at once, one takes the session over from the other. A
//     takeover is final: Started and Attached give the client's hold
//     (Holder), random and new on every attach and resume, and a resume
//     (Attach.Resume) that gives a Holder other than the session's latest
//     (or the one the latest resume gave, should its client not have
//     heard back, in a resume with a higher Attempt) is answered with
//     Detached. With
//     Attach.ReadOnly the client watches instead: it gets Attached and
//     Restore frames that redraw the screen for its own size (Attach.Size,
//     then its Resize frames) as the screen changes, sends nothing else
//     but Resize and Ping, never sizes the session, and takes nothing over;
//     it ends with Exit when the session does.
//   - List is answered by Sessions: one SessionInfo per kept session the
//     peer may see, never with the program's arguments or environment.
//   - Peek is answered by Snapshot: the session's screen as lines (with
//     colours and styles as escape sequences when Peek.ANSI), its size and
//     its cursor. It never sizes the session nor sends it input.
//   - Kill sends its Signal (one of Signals) to the session's processes, or
//     hangs the session up when Signal is empty; Remove forgets an exited
//     session. Both are answered by Done, or an Error.
//
// A peer whose uid the transport tells (a unix socket) reaches only the
// kept sessions its uid started, unless it may run sessions as any user
// (root, or a uid the agent trusts); others are told there is "no such
// session", a KindSession Error, as for a name that does not exist.
//
// # Copying files (CapCopy)
//
// Instead of Exec, a host whose agent announced CapCopy may send CopyIn
// or CopyOut. The guest does the file work itself, as CopyIn.User or
// CopyOut.User (the same checks as an Exec's user), with no program
// started. A copy moves trees: each is a CopyRoot frame, then a CopyEntry
// for everything beneath the root (a directory's entry before what it
// holds), each file's entry followed by its CopyData frames (exactly its
// Size bytes in all) and a CopyEnd. Entries are binary, all integers
// big-endian:
//
//	offset  size  field
//	0       1     kind: 1 file, 2 directory, 3 symbolic link, 4 hard link
//	1       1     flags: bit 0 Contents (CopyRoot only)
//	2       4     mode: Unix permission bits, 07777 at most
//	6       4     uid
//	10      4     gid
//	14      8     modification time, seconds since 1970 (signed)
//	22      4     and nanoseconds
//	26      8     size in bytes (files; 0 otherwise)
//	34      2     path length, at most 4096
//	36      2     link length, at most 4096 (links only)
//	38            path bytes, then link bytes
//
// Paths are bytes, not text. A root's path is the source's base name; a
// path beneath it is relative, slash-separated, with no empty, "." or ".."
// element; a receiver refuses any other, and never writes through a
// symbolic link beneath the destination, so that no entry lands outside
// it.
//
// A hard link (CapCopyHardlinks) is another name for a file sent earlier
// in the same tree, never a root: its link bytes are that file's path
// beneath the root, in the same form. It carries no data. A receiver makes
// it beneath the destination as it makes any entry, or names it as not
// copied when that file was not. A host sends hard links only to a guest
// that announced CapCopyHardlinks, and a guest sends them only in answer
// to a CopyOut with Hardlinks set; otherwise each name is a file.
//
// CopyIn: the guest resolves the destination as docker cp does (a file
// into an existing directory under its own name, over an existing file, or
// to a new name whose parent exists; a directory into an existing
// directory, or as a new one; a root with Contents into the directory
// itself; more than one source only into an existing directory), and
// answers the host's trees with a CopyProblem for each thing it could not
// write, as it goes. The host ends with CopyDone; the guest answers with
// its own CopyDone and closes. A file is written under a temporary name
// and renamed into place only once whole: a copy cut off leaves no part of
// a file under its name. An Error of kind "copy" ends a copy whose request
// cannot be served at all (a destination that is not a directory for
// several sources).
//
// CopyOut: the guest sends the trees at CopyOut.Paths, in order, with a
// CopyProblem for each thing it could not read, a path that is missing
// among them, and ends with CopyDone. A file it could not read whole (one
// that shrank) ends early: its CopyProblem comes before its CopyEnd, whose
// Error is set, and the host drops that file and goes on. Devices, FIFOs
// and sockets are not sent: each is a CopyProblem with Skipped set.
//
// # Forwarding (CapForward)
//
// Instead of Exec, a version-2 host whose agent announced CapForward may send
// Forward: the connection then carries streams, byte streams each way
// between a connection on one side and one the other side makes, as
// ssh's channels (RFC 4254 sections 5 and 7). The guest checks
// Forward.User as an Exec's user, and answers Forwarding, with the most
// streams it keeps open at once on the connection, or an Error: KindUser,
// or KindForward when the agent does not forward. An agent that does not
// forward announces no CapForward. After Forwarding, only stream frames,
// Listen and Listening follow; any other frame is a protocol error and
// ends the connection.
//
// Every stream frame's payload starts with the stream's id, a uint32
// big-endian, never 0. The host opens streams with odd ids, the guest
// with even ones; an id is not reused on a connection. All integers are
// big-endian:
//
//	StreamOpen     id(4) window(4) network(1) length(2) address
//	StreamOpened   id(4) window(4)
//	StreamRefused  id(4) reason: UTF-8, at most 1024 bytes
//	StreamData     id(4) 1 to 32768 bytes
//	StreamAck      id(4) n(4): 1 to 16 MiB
//	StreamEOF      id(4)
//	StreamClose    id(4)
//
// StreamOpen asks the other side to connect to address: network 1 is TCP
// (address host:port), 2 a unix socket (address its path), 3 a connection
// to one of the opener's listeners (address the id of the Listen that
// made it, in decimal: the other side connects where it chose when it
// asked, and refuses any id it did not ask for), 4 a connection to the
// guest's agent socket (below), which only the guest opens; the address
// has 1 to 4096 bytes and no NUL. The other side answers StreamOpened
// once it has connected, or StreamRefused with why not (the reason is
// for the user: "dial unix /run/x.sock: permission denied"); a refused
// id is free at once (with early data, below, once the opener closes it). A side refuses an open beyond the most streams it
// keeps, without taking anything for it.
//
// Each side gives a window, in its StreamOpen or StreamOpened: the bytes
// of StreamData it buffers for the stream before its consumer reads them,
// 1 to 16 MiB. A sender keeps the bytes sent on a stream and not yet
// acknowledged by the receiver's StreamAck at or below the receiver's
// window; a receiver acknowledges bytes its consumer has taken, at the
// latest once they come to half its window (as OpenSSH's
// channel_check_window), so a sender never waits on bytes already read
// and a small exchange needs no StreamAck. A receiver never waits for a stream's consumer to read the connection:
// a stream whose consumer stalls stops only its own sender. Data beyond
// the window, an acknowledgement of bytes not sent, a frame for a stream
// that is not open, an open of the other side's id or of an id in use,
// are protocol errors that end the connection.
//
// StreamEOF is a half close: the sender sends no more data on the
// stream, and may go on receiving (shutdown(2) with SHUT_WR). StreamClose
// ends the stream both ways: a side that gets it answers with its own
// StreamClose unless it sent one already, and discards data that arrives
// for a stream it closed. The id is free once a side has both sent and
// received StreamClose. When the connection ends, every stream on it
// ends.
//
// Early data, as TCP Fast Open's data in a SYN: a host that sets
// Forward.EarlyData, answered by a guest that sets Forwarding.EarlyData,
// agrees that from then on the opener of a stream, either side, may send
// up to 32 KiB of StreamData, a StreamEOF and a StreamClose right behind
// its StreamOpen, before the answer; every window on the connection is
// then at least 32 KiB, and what was sent early counts against the window
// StreamOpened gives. The other side keeps those frames for the stream
// while it connects and hands them on once it has. It answers every open
// all the same: an open the opener closed early gets StreamRefused, or
// StreamOpened followed by StreamClose. A side that refuses an open
// discards the stream's frames until the opener's StreamClose, which the
// opener sends on a StreamRefused unless it sent one already; only then
// is the id free on the refusing side, which ends the connection when
// more refused streams than it keeps open wait for their close. Without
// the agreement, StreamData before StreamOpened is a protocol error.
//
// Listen (a remote forward, as ssh's tcpip-forward) asks a guest serving
// with --forwarding=all to listen on a port of its loopback interface
// (port 0: one it picks), as Forward.User: a port below 1024 only for
// root. With Path instead (CapForwardListenUnix, as OpenSSH's
// streamlocal-forward), the guest listens on a unix socket it makes at
// that path as Forward.User, mode 0600 (sshd's StreamLocalBindMask
// 0177). The path is absolute, of at most 4096 bytes with no NUL, and
// the port 0: any other Listen with a path is a protocol error. Something
// already at the path is never replaced (sshd's StreamLocalBindUnlink
// no): that Listen is refused. When the listener closes, the guest
// removes the socket, unless what is at the path is no longer the socket
// it made. A host sends Path only to a guest that announced
// CapForwardListenUnix: one that did not ignores the field and listens on
// a TCP port. The guest answers Listening with the address it listens on
// (the path, for a socket), or with Error set, and then opens a stream
// (network 3, the Listen's id) for each connection it accepts there. A
// guest keeps at most 16 listeners per connection; they close when the
// connection ends. Listen, Listening, Ports and the stream frames are the
// frames that may follow Forwarding.
//
// Following the guest's listeners (CapForwardWatch), as lima does: after a
// Forward with Watch set, the guest sends Ports at once and again whenever
// the set changes: every TCP port that a program listens on, on the
// loopback address or on every address, each with the loopback address
// that reaches it (127.0.0.1, or ::1 for a port only IPv6 listens on), at
// most 1024 of them. A Forward.User other than root is told only of the
// ports its own uid's sockets listen on. The host decides which to carry
// and opens streams to them as to any address.
//
// Agent forwarding (CapForwardAgent), as ssh -A: a Forward with Agent set
// asks the guest for an agent socket. The guest makes a new directory,
// mode 0700 and owned by Forward.User, with a socket in it, and answers
// its path in Forwarding.AgentSocket; the host puts it in the
// SSH_AUTH_SOCK of the session it then starts on another connection. A
// connection to the socket from a process of another uid than the user's
// or root's is closed unread; each other one becomes a stream the guest
// opens (network 4, the socket's path as the address), which the host
// connects to its own agent. The socket and its directory go when the
// forwarding connection ends: a host keeps that connection for as long
// as the session it serves. A guest that cannot make the socket answers
// an Error of kind "forward". For a kept session the host attaches to
// again, Forward.AgentSession names it (as Attach.Session does, with the
// same rule on who may reach it, and an Error of kind "session" when the
// peer may not): the guest makes the directory and the socket again at
// the path the session's SSH_AUTH_SOCK names, as the session's user,
// provided that path is one it makes (a cork-agent- directory of the
// guest's temporary directory) and that a directory already there is the
// user's alone.
package protocol
