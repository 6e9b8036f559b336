"""A fake containerd API for the faults a real one does not show on demand: a Python gRPC
server answering raw bytes per method, a raw listener, and the handlers most fakes need
(an error status, a hang, garbage)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

SLACK = 0.5  # what a loaded 2-core machine may add to a deadline

Handler = Callable[[bytes, Any], bytes]


class _Generic(grpc.GenericRpcHandler):  # type: ignore[misc]
    def __init__(self, methods: dict[str, Handler]) -> None:
        self.methods = methods

    def service(self, details: Any) -> Any:
        fn = self.methods.get(details.method)
        if fn is None:
            return None  # UNIMPLEMENTED, as containerd 1.6 answers for the sandbox store
        return grpc.unary_unary_rpc_method_handler(fn)  # raw bytes in and out


@contextlib.contextmanager
def grpc_fake(path: Path, methods: dict[str, Handler]) -> Iterator[None]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((_Generic(methods),))
    server.add_insecure_port(f"unix:{path}")
    server.start()
    try:
        yield
    finally:
        server.stop(0).wait(5)


@contextlib.contextmanager
def raw_fake(path: Path, on_accept: Callable[[socket.socket], None]) -> Iterator[None]:
    """A listener that hands every connection to ``on_accept`` on its own thread."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def serve() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conns.append(conn)
            threading.Thread(target=on_accept, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
        listener.close()
        for conn in conns:
            conn.close()


def status(code: grpc.StatusCode, text: str) -> Handler:
    """Answers every call with the error ``code``."""

    def handler(_: bytes, ctx: Any) -> bytes:
        ctx.abort(code, text)
        return b""

    return handler


def sleeper(seconds: float) -> Handler:
    def handler(_: bytes, ctx: Any) -> bytes:
        time.sleep(seconds)
        return b""

    return handler


def garbage(_: bytes, ctx: Any) -> bytes:
    return b"\xff\xff\xff\xff not a protobuf message"
