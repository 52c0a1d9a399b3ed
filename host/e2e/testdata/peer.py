#!/usr/bin/env python3
"""A cork host written from the protocol's package documentation alone, to
show that the spec is enough to write a peer: it runs one program through
corkd on a unix socket and exits with its status, or attaches to a kept
session (protocol version 2), types a line once the program has redrawn,
and exits with the program's status.

usage: peer.py SOCKET STDIN_TEXT ARGV...
       peer.py --attach SOCKET SESSION WAIT_FOR LINE
"""
import json
import socket
import struct
import sys

HELLO, EXEC, STARTED, ATTACH, ATTACHED = 0x01, 0x02, 0x03, 0x06, 0x07
STDIN, STDIN_EOF, STDOUT, STDERR, STDIN_ACK = 0x10, 0x11, 0x12, 0x13, 0x14
RESIZE, EXIT, ERROR = 0x20, 0x30, 0x31


def send(sock, typ, payload=b""):
    sock.sendall(struct.pack(">BI", typ, len(payload)) + payload)


def recv_exactly(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("connection closed mid-frame")
        buf += chunk
    return buf


def recv(sock):
    typ, length = struct.unpack(">BI", recv_exactly(sock, 5))
    if length > 1 << 20:
        raise ValueError("frame over 1 MiB")
    return typ, recv_exactly(sock, length)


def attach():
    path, session, wait_for, line = sys.argv[2], sys.argv[3], sys.argv[4].encode(), sys.argv[5].encode()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    send(sock, HELLO, json.dumps({"min_version": 2, "max_version": 2, "capabilities": ["keep"]}).encode())
    typ, payload = recv(sock)
    hello = json.loads(payload)
    assert typ == HELLO and hello["version"] == 2 and "keep" in hello.get("capabilities", []), (typ, payload)
    send(sock, ATTACH, json.dumps({"session": session, "size": {"cols": 80, "rows": 24}}).encode())
    output, typed, offset = b"", False, None
    while True:
        typ, payload = recv(sock)
        if typ == ATTACHED:
            attached = json.loads(payload)
            offset = attached["from"]
        elif typ == STDOUT:
            offset += len(payload)  # the number of the session's next output byte
            output += payload
            sys.stdout.buffer.write(payload)
            if not typed and wait_for in output:
                send(sock, STDIN, line)
                typed = True
        elif typ == EXIT:
            sys.stdout.flush()
            print("offset %d" % offset, file=sys.stderr)
            sys.exit(json.loads(payload)["code"])
        elif typ == ERROR:
            err = json.loads(payload)
            print("error %s: %s" % (err["kind"], err["message"]), file=sys.stderr)
            sys.exit(125)


def main():
    if sys.argv[1] == "--attach":
        return attach()
    path, stdin_text, argv = sys.argv[1], sys.argv[2].encode(), sys.argv[3:]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    send(sock, HELLO, json.dumps({"min_version": 1, "max_version": 1, "capabilities": ["pipes"]}).encode())
    typ, payload = recv(sock)
    assert typ == HELLO and json.loads(payload)["version"] == 1, (typ, payload)
    send(sock, EXEC, json.dumps({"argv": argv, "env": ["FROM_PYTHON=yes"], "tty": False, "stdin": True}).encode())
    while True:
        typ, payload = recv(sock)
        if typ == STARTED:
            started = json.loads(payload)
            assert len(stdin_text) <= started["stdin_window"]
            send(sock, STDIN, stdin_text)
            send(sock, STDIN_EOF)
            # Fire and forget, and ignored on a pipe session.
            send(sock, RESIZE, struct.pack(">HHHH", 100, 30, 0, 0))
        elif typ == STDOUT:
            sys.stdout.buffer.write(payload)
        elif typ == STDERR:
            sys.stderr.buffer.write(payload)
        elif typ == STDIN_ACK:
            (n,) = struct.unpack(">I", payload)
        elif typ == EXIT:
            sys.stdout.flush()
            sys.exit(json.loads(payload)["code"])
        elif typ == ERROR:
            err = json.loads(payload)
            print("error %s: %s" % (err["kind"], err["message"]), file=sys.stderr)
            sys.exit(125)


if __name__ == "__main__":
    main()
