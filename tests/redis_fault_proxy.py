#!/usr/bin/env python3
"""A Redis that misbehaves on demand, for tests/redis.rs: a proxy on
127.0.0.1:LISTEN in front of a real redis-server on 127.0.0.1:UPSTREAM that
forwards each request and then answers as the mode file says (read afresh
for every request):

  pass        the server's reply
  slow MS     every step answered after MS ms; the first EVALSHA on a
              connection is answered -NOSCRIPT (not forwarded)
  trickle MS  the reply one byte every MS ms
  push MS     a RESP3 push frame every MS ms (50 of them), then the reply
  malformed   a frame that is no RESP instead of the reply
  double      the reply twice
  late MS     the server's reply held back MS ms (the server ran the
              request; a client that gave up never sees the answer)
  latedouble MS
              the server's reply, then MS ms later a copy of its first
              frame, and the next request on the connection (held back
              meanwhile) answered -ERR, not forwarded: a client that reads
              the copy as that answer takes an error for a success

Usage: redis_fault_proxy.py LISTEN UPSTREAM MODE_FILE
"""

import socket
import sys
import threading
import time


def frame_end(buf, at=0):
    """End of the first whole RESP frame at `at`, or None."""
    if at >= len(buf):
        return None
    nl = buf.find(b"\r\n", at)
    if nl < 0:
        return None
    kind, head, nxt = buf[at:at + 1], buf[at + 1:nl], nl + 2
    if kind in b"+-:_#,(":
        return nxt
    n = int(head)
    if kind in b"$!=":
        if n < 0:
            return nxt
        end = nxt + n + 2
        return end if len(buf) >= end else None
    if n < 0:
        return nxt
    for _ in range(2 * n if kind in b"%|" else n):
        nxt = frame_end(buf, nxt)
        if nxt is None:
            return None
    return nxt


def frames(buf):
    """Whole frames at the start of buf, and the rest."""
    out, at = [], 0
    while True:
        end = frame_end(buf, at)
        if end is None:
            return out, buf[at:]
        out.append(buf[at:end])
        at = end


def read_frames(sock, buf, n):
    out = []
    while len(out) < n:
        got, buf = frames(buf)
        out += got
        if len(out) >= n:
            break
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return out[:n], buf


def mode(path):
    try:
        with open(path) as f:
            parts = f.read().split()
    except OSError:
        parts = []
    if not parts:
        return "pass", 0
    return parts[0], int(parts[1]) if len(parts) > 1 else 0


def serve(client, upstream_port, mode_path):
    up = socket.create_connection(("127.0.0.1", upstream_port))
    cbuf, ubuf, scripts_known, erring = b"", b"", False, False
    try:
        while True:
            reqs, cbuf = frames(cbuf)
            if not reqs:
                chunk = client.recv(65536)
                if not chunk:
                    return
                cbuf += chunk
                continue
            if erring:
                erring = False
                client.sendall(b"-ERR injected\r\n" * len(reqs))
                continue
            name, ms = mode(mode_path)
            evalsha = b"EVALSHA" in reqs[0][:32].upper()
            if name == "slow" and evalsha and not scripts_known:
                scripts_known = True
                time.sleep(ms / 1000)
                client.sendall(b"-NOSCRIPT No matching script. Please use EVAL.\r\n")
                continue
            up.sendall(b"".join(reqs))
            replies, ubuf = read_frames(up, ubuf, len(reqs))
            reply = b"".join(replies)
            if name in ("slow", "late"):
                time.sleep(ms / 1000)
                client.sendall(reply)
            elif name == "trickle":
                for i in range(len(reply)):
                    time.sleep(ms / 1000)
                    client.sendall(reply[i:i + 1])
            elif name == "push":
                for _ in range(50):
                    time.sleep(ms / 1000)
                    client.sendall(b">2\r\n$7\r\nmessage\r\n$3\r\nabc\r\n")
                client.sendall(reply)
            elif name == "malformed":
                client.sendall(b"?not resp\r\n")
            elif name == "double":
                client.sendall(reply + reply)
            elif name == "latedouble":
                client.sendall(reply)
                time.sleep(ms / 1000)
                client.sendall(replies[0])
                erring = True
            else:
                client.sendall(reply)
    except OSError:
        pass
    finally:
        client.close()
        up.close()


def main():
    listen, upstream, mode_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", listen))
    srv.listen(64)
    print("ready", flush=True)
    while True:
        c, _ = srv.accept()
        threading.Thread(target=serve, args=(c, upstream, mode_path), daemon=True).start()


if __name__ == "__main__":
    main()
