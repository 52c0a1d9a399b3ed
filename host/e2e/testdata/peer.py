#!/usr/bin/env python3
"""A cork host written from the protocol's package documentation alone, to
show that the spec is enough to write a peer: it runs one program through
corkd on a unix socket and exits with its status.

usage: peer.py SOCKET STDIN_TEXT ARGV...
"""
import json
import socket
import struct
import sys

HELLO, EXEC, STARTED = 0x01, 0x02, 0x03
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


def main():
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
