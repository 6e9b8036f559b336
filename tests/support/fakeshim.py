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
  exit         end the whole process at once (os._exit), mid-call, leaving its socket file
  vanish       (ShimServer only) remove the socket, answer as usual, and exit once the client
               hangs up: a shim caught exiting (a concurrent delete) while it is probed

`ShimServer` is a fake *shim*: it serves the task API the way a runc shim with no task does
(Connect with its pid, NotFound for Pids/State/Delete, Shutdown removes its socket and exits),
and any method can be given one of the faulty behaviours above (`faults={"Delete": "exit"}`,
`"*"` for every method). Run as a script with a shim server's argv,

  python fakeshim.py -namespace NS -id ID -address ADDR -socket PATH [-fault METHOD=B]...
                     [-pid N] [-task-pid N] [-child] [-ignore-term] [-marker-dir DIR] [-sleep]

it is a separate process that shimctl's process search takes for the shim of bundle ID (start it
with the bundle as its cwd): `-socket` is where it listens (`@name` for an abstract socket),
`-pid` the shim pid its Connect reports (a liar), `-task-pid` a pid its (running) task
reports, `-child` starts a child in its process group,
`-ignore-term` ignores SIGTERM, `-marker-dir` makes a `silent` method record in DIR how many
fake shims were hung in a call at the same time, and `-sleep` makes it serve nothing at all (a
process that merely looks like a shim; it logs every catchable signal to DIR/ID.signals). It
prints `ready PID CHILD_PID` once it listens.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from shimctl.shim.proto import task_pb2, ttrpc_pb2

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
        # "@name" is an abstract socket (no file), as old shims used.
        self._srv.bind("\0" + path[1:] if path.startswith("@") else path)
        self._srv.listen(16)

    @property
    def address(self) -> str:
        return self.path[1:] if self.path.startswith("@") else "unix://" + self.path

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
        if not self.path.startswith("@") and os.path.exists(self.path):
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
            self._hung_up()

    def _hung_up(self) -> None:
        """A client connection ended."""

    def _answer(self, conn: socket.socket, sid: int, req: ttrpc_pb2.Request, n: int) -> bool:
        return self._answer_as(self.behaviour, conn, sid, req, n)

    def _answer_as(
        self, b: str, conn: socket.socket, sid: int, req: ttrpc_pb2.Request, n: int
    ) -> bool:
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
        elif b == "exit":
            os._exit(3)
        else:
            raise ValueError(f"unknown behaviour {b}")
        return True


def _status(sid: int, code: int, message: str) -> bytes:
    resp = ttrpc_pb2.Response()
    resp.status.code = code
    resp.status.message = message
    return _frame(sid, 2, resp.SerializeToString())


class ShimServer(FakeShim):
    """A fake shim serving the task API like a runc shim with no task, with per-method faults.

    In a thread (tests) Shutdown only closes the server; in its own process (`main`) it
    removes the socket and exits, as a real shim does.
    """

    def __init__(
        self,
        path: str,
        *,
        faults: dict[str, str] | None = None,
        shim_pid: int | None = None,
        marker_dir: str | None = None,
        name: str = "fake",
        exit_on_shutdown: bool = False,
        task_pid: int = 0,
    ) -> None:
        super().__init__(path, "shim")
        self.task_pid = task_pid
        self.faults = dict(faults or {})
        self.shim_pid = shim_pid
        self.marker_dir = marker_dir
        self.name = name
        self.exit_on_shutdown = exit_on_shutdown
        self.vanishing = False

    def _hung_up(self) -> None:
        if self.vanishing and self.exit_on_shutdown:
            os._exit(0)

    def _answer(self, conn: socket.socket, sid: int, req: ttrpc_pb2.Request, n: int) -> bool:
        fault = self.faults.get(req.method, self.faults.get("*"))
        if fault == "vanish":
            if not self.path.startswith("@"):
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
            self.vanishing = True
            fault = None
        if fault == "silent" and self.marker_dir:
            return self._hang_counting(conn)
        if fault is not None:
            return self._answer_as(fault, conn, sid, req, n)
        if req.method == "Connect":
            reply = task_pb2.ConnectResponse(
                shim_pid=self.shim_pid or os.getpid(), task_pid=0, version="2"
            )
            conn.sendall(_ok(sid, reply.SerializeToString()))
        elif self.task_pid and req.method == "Pids":
            pids = task_pb2.PidsResponse(processes=[task_pb2.ProcessInfo(pid=self.task_pid)])
            conn.sendall(_ok(sid, pids.SerializeToString()))
        elif self.task_pid and req.method == "State":
            state = task_pb2.StateResponse(
                id=req.method, pid=self.task_pid, status=task_pb2.RUNNING
            )
            conn.sendall(_ok(sid, state.SerializeToString()))
        elif self.task_pid and req.method == "Delete":
            conn.sendall(_status(sid, 2, "cannot delete a running container"))
        elif req.method in ("Pids", "State", "Delete", "Wait", "Kill"):
            conn.sendall(_status(sid, 5, "container not created: not found"))
        elif req.method == "Shutdown":
            conn.sendall(_ok(sid, b""))
            if self.exit_on_shutdown and not self.task_pid:
                if not self.path.startswith("@"):
                    with contextlib.suppress(OSError):
                        os.unlink(self.path)
                os._exit(0)
            return False
        else:
            conn.sendall(_status(sid, 12, f"{req.method}: not implemented"))
        return True

    def _hang_counting(self, conn: socket.socket) -> bool:
        """Never answer; until the client hangs up, record the most fake shims seen hung in a
        call at once (marker files in marker_dir), so a test can tell that shimctl probed them
        concurrently without timing anything."""
        assert self.marker_dir is not None
        mine = os.path.join(self.marker_dir, f"{self.name}.open")
        peak_file = os.path.join(self.marker_dir, f"{self.name}.peak")
        with open(mine, "w"):
            pass
        peak = 0
        try:
            while not self._stop:
                count = sum(1 for f in os.listdir(self.marker_dir) if f.endswith(".open"))
                if count > peak:
                    peak = count
                    with open(peak_file + ".tmp", "w") as f:
                        f.write(str(peak))
                    os.replace(peak_file + ".tmp", peak_file)
                ready, _, _ = select.select([conn], [], [], 0.02)
                if ready and not conn.recv(65536):
                    return False  # the client gave up and closed
        finally:
            with contextlib.suppress(OSError):
                os.unlink(mine)
        return False


def _sleep_logging_signals(log: str) -> None:
    """Look like a shim, serve nothing; append every catchable signal's number to `log`."""

    def note(signum: int, _frame: object) -> None:
        with open(log, "a") as f:
            f.write(f"{signum}\n")

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1):
        signal.signal(sig, note)
    print(f"ready {os.getpid()} 0", flush=True)
    while True:
        time.sleep(3600)


def shim_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="fakeshim")
    parser.add_argument("-namespace", required=True)
    parser.add_argument("-id", required=True)
    parser.add_argument("-address", required=True)
    parser.add_argument("-socket")
    parser.add_argument("-fault", action="append", default=[])
    parser.add_argument("-pid", type=int)
    parser.add_argument("-task-pid", type=int, default=0)
    parser.add_argument("-child", action="store_true")
    parser.add_argument("-ignore-term", action="store_true")
    parser.add_argument("-marker-dir")
    parser.add_argument("-sleep", action="store_true")
    args = parser.parse_args(argv)
    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.sleep:
        _sleep_logging_signals(os.path.join(args.marker_dir or ".", f"{args.id}.signals"))
    child = 0
    if args.child:
        # Inherits our process group: a group kill of the shim reaches it, a pid kill does not.
        child = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(600)"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ).pid
    faults = dict(f.split("=", 1) for f in args.fault)
    srv = ShimServer(
        args.socket,
        faults=faults,
        shim_pid=args.pid,
        marker_dir=args.marker_dir,
        name=args.id,
        exit_on_shutdown=True,
        task_pid=args.task_pid,
    )
    print(f"ready {os.getpid()} {child}", flush=True)
    srv.serve_forever()


def main() -> None:
    if sys.argv[1].startswith("-"):
        shim_main(sys.argv[1:])
        return
    path, behaviour = sys.argv[1], sys.argv[2]
    srv = FakeShim(path, behaviour)
    print("ready", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
