"""A tiny misbehaving ttrpc server, for faults the real shim cannot show.

Use `FakeShim(path, behaviour)` as a context manager (a server thread), or run this file as
a script (`python fakeshim.py SOCKET BEHAVIOUR`) to get a separate process that can be
killed mid-call. It speaks just enough ttrpc to read Request frames; how it answers is the
behaviour:

  ok           answer every request with a Response whose payload echoes the request's
  empty        answer every request with an empty Response (e.g. containerd's event sink
               for the shim's Events/Forward calls)
  silent       read requests, never answer
  garbage      answer with bytes that are not ttrpc
  oversized    answer with a frame of MAX+1 data bytes (streamed, then a good response
               for the next request)
  huge-header  answer with a header claiming 4 GiB of data, then nothing
  close-mid    send half a response header, then close
  wrong-stream answer on stream id + 2
  wrong-type   answer with a type-3 (Data) frame on the right stream
  bad-envelope answer with a Response frame whose data is not a protobuf
  status       answer with Status{code=5, message="container not created: not found"}
  drip         answer one byte every 0.2 s
  die          close the connection as soon as a request arrives
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from shimctl.shim.proto import ttrpc_pb2

MAX = 4 * 1024 * 1024
HEADER = struct.Struct(">IIBB")
GARBAGE = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\r\nnot ttrpc\r\n"


@dataclass
class Seen:
    stream_id: int
    msg_type: int
    flags: int
    request: ttrpc_pb2.Request


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def _frame(sid: int, mtype: int, data: bytes, length: int | None = None) -> bytes:
    return HEADER.pack(len(data) if length is None else length, sid, mtype, 0) + data


def _ok(sid: int, payload: bytes) -> bytes:
    return _frame(sid, 2, ttrpc_pb2.Response(payload=payload).SerializeToString())


class FakeShim:
    def __init__(self, path: str, behaviour: str) -> None:
        self.path = path
        self.behaviour = behaviour
        self.seen: list[Seen] = []
        self.received = threading.Event()  # set when a request has been read
        self._stop = False
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._srv.bind(path)
        self._srv.listen(16)

    @property
    def address(self) -> str:
        return "unix://" + self.path

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> FakeShim:
        t = threading.Thread(target=self._accept_loop, name="fakeshim-accept", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            self._srv.shutdown(socket.SHUT_RDWR)
        self._srv.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()
        for t in self._threads:
            t.join(timeout=5)
        if os.path.exists(self.path):
            os.unlink(self.path)

    def serve_forever(self) -> None:
        self._accept_loop()

    # -- serving -----------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._srv.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket) -> None:
        n = 0
        try:
            while not self._stop:
                hdr = _recv_exact(conn, 10)
                if hdr is None:
                    return
                length, sid, mtype, flags = HEADER.unpack(hdr)
                data = _recv_exact(conn, length)
                if data is None:
                    return
                req = ttrpc_pb2.Request()
                req.ParseFromString(data)
                self.seen.append(Seen(sid, mtype, flags, req))
                self.received.set()
                n += 1
                if not self._answer(conn, sid, req, n):
                    return
        except OSError:
            return
        finally:
            conn.close()

    def _answer(self, conn: socket.socket, sid: int, req: ttrpc_pb2.Request, n: int) -> bool:
        b = self.behaviour
        if b == "ok":
            conn.sendall(_ok(sid, req.payload))
        elif b == "empty":
            conn.sendall(_ok(sid, b""))
        elif b == "silent":
            pass
        elif b == "garbage":
            conn.sendall(GARBAGE)
        elif b == "oversized":
            if n == 1:
                conn.sendall(HEADER.pack(MAX + 1, sid, 2, 0))
                chunk = b"\xff" * 65536
                left = MAX + 1
                while left:
                    k = min(left, len(chunk))
                    conn.sendall(chunk[:k])
                    left -= k
            else:
                conn.sendall(_ok(sid, req.payload))
        elif b == "huge-header":
            conn.sendall(HEADER.pack(0xFFFFFFFF, sid, 2, 0))
        elif b == "close-mid":
            conn.sendall(_ok(sid, b"abcdef")[:5])
            return False
        elif b == "wrong-stream":
            conn.sendall(_ok(sid + 2, req.payload))
        elif b == "wrong-type":
            conn.sendall(_frame(sid, 3, b"\x12\x00"))
        elif b == "bad-envelope":
            conn.sendall(_frame(sid, 2, b"\x0a\xff\xff\xff"))
        elif b == "status":
            resp = ttrpc_pb2.Response()
            resp.status.code = 5
            resp.status.message = "container not created: not found"
            conn.sendall(_frame(sid, 2, resp.SerializeToString()))
        elif b == "drip":
            for byte in _ok(sid, b"x" * 50):
                conn.sendall(bytes([byte]))
                time.sleep(0.2)
        elif b == "die":
            return False
        else:
            raise ValueError(f"unknown behaviour {b}")
        return True


def main() -> None:
    path, behaviour = sys.argv[1], sys.argv[2]
    srv = FakeShim(path, behaviour)
    print("ready", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
