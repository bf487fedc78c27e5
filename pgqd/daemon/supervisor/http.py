"""A small HTTP/1.1 server that lives inside the supervisor's select loop: /metrics, /healthz, /readyz.

No thread and no event loop: the listening socket and each connection are file descriptors the loop already
waits on. Requests are tiny GETs from probes and scrapers; every response closes its connection.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_REQUEST = 8192
REQUEST_TIMEOUT = 5.0


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


Route = Callable[[], Response]
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 400: "Bad Request", 503: "Service Unavailable"}


def parse_listen(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class HttpServer:
    def __init__(self, address: str, routes: dict[str, Route]) -> None:
        host, port = parse_listen(address)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(64)
        self.listener.setblocking(False)
        self.address = self.listener.getsockname()
        self.routes = routes
        self._pending: dict[int, tuple[socket.socket, bytes, float]] = {}

    def filenos(self) -> list[int]:
        return [self.listener.fileno(), *self._pending]

    def handle(self, ready: set[int]) -> None:
        """Accepts new connections and answers those whose request has arrived; drops stalled ones."""
        if self.listener.fileno() in ready:
            self._accept()
        now = time.monotonic()
        for fd in list(self._pending):
            conn, data, since = self._pending[fd]
            if fd in ready:
                self._read(fd, conn, data, since)
            elif now - since > REQUEST_TIMEOUT:
                self._drop(fd)

    def _accept(self) -> None:
        for _ in range(64):
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            conn.setblocking(False)
            self._pending[conn.fileno()] = (conn, b"", time.monotonic())

    def _read(self, fd: int, conn: socket.socket, data: bytes, since: float) -> None:
        try:
            chunk = conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(fd)
            return
        data += chunk
        if not chunk or b"\r\n\r\n" in data or len(data) > MAX_REQUEST:
            del self._pending[fd]
            self._respond(conn, data)
            return
        self._pending[fd] = (conn, data, since)

    def _respond(self, conn: socket.socket, request: bytes) -> None:
        try:
            line = request.split(b"\r\n", 1)[0].decode("latin-1")
            method, target, _ = line.split(" ", 2)
        except ValueError:
            response = Response(400, b"bad request\n")
        else:
            route = self.routes.get(target.split("?", 1)[0])
            if route is None:
                response = Response(404, b"not found: try /metrics, /healthz or /readyz\n")
            elif method not in ("GET", "HEAD"):
                response = Response(405, b"only GET\n")
            else:
                try:
                    response = route()
                except Exception as exc:  # a failing route must never take the supervisor down
                    response = Response(503, f"error: {exc}\n".encode())
                if method == "HEAD":
                    response = Response(response.status, b"", response.content_type)
        head = (
            f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Error')}\r\n"
            f"Content-Type: {response.content_type}\r\nContent-Length: {len(response.body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        with contextlib.suppress(OSError):
            conn.settimeout(2.0)
            conn.sendall(head + response.body)
        conn.close()

    def _drop(self, fd: int) -> None:
        conn, _, _ = self._pending.pop(fd)
        conn.close()

    def close(self) -> None:
        for fd in list(self._pending):
            self._drop(fd)
        self.listener.close()
