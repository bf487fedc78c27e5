"""A stand-in PostgreSQL server that asks for a password and refuses it, as a real one does for a wrong
password. It speaks just enough of the wire protocol for a client to get the real error (28P01)."""

from __future__ import annotations

import socket
import struct
import threading
from types import TracebackType

SSL_REQUEST = 80877103


class PasswordRefusingServer:
    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.settimeout(0.2)
        self.port: int = self.listener.getsockname()[1]
        self.attempts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> PasswordRefusingServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(5)
        self.listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    self._refuse(conn)
                except (OSError, struct.error):
                    continue

    def _read_startup(self, conn: socket.socket) -> bytes:
        length = struct.unpack("!I", _read_exactly(conn, 4))[0]
        return _read_exactly(conn, length - 4)

    def _refuse(self, conn: socket.socket) -> None:
        body = self._read_startup(conn)
        if struct.unpack("!I", body[:4])[0] == SSL_REQUEST:
            conn.sendall(b"N")
            body = self._read_startup(conn)
        conn.sendall(b"R" + struct.pack("!II", 8, 3))  # AuthenticationCleartextPassword
        kind = _read_exactly(conn, 1)
        length = struct.unpack("!I", _read_exactly(conn, 4))[0]
        _read_exactly(conn, length - 4)
        if kind != b"p":
            return
        self.attempts += 1
        fields = b"".join(
            code + text.encode() + b"\0"
            for code, text in (
                (b"S", "FATAL"),
                (b"V", "FATAL"),
                (b"C", "28P01"),
                (b"M", 'password authentication failed for user "app"'),
            )
        )
        payload = fields + b"\0"
        conn.sendall(b"E" + struct.pack("!I", len(payload) + 4) + payload)


def _read_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise OSError("connection closed")
        data += chunk
    return data
