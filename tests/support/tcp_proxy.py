"""A TCP proxy between pgqd and PostgreSQL that can hang or cut the network the way production does.

- ``freeze()``: every open and new connection stops forwarding while the sockets stay open, as when the
  database host hangs; ``thaw()`` resumes.
- ``blackhole_open()``: the connections open now never forward again, with no RST and no EOF, while new ones go
  through: a failover, where the old primary's address is gone and a new primary answers.

It runs in threads of the test process (one pump per direction per connection), so it needs no event loop.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

_POLL = 0.02


@dataclass
class _Link:
    client: socket.socket
    upstream: socket.socket
    blackholed: bool = False
    closed: threading.Event = field(default_factory=threading.Event)

    def close(self) -> None:
        self.closed.set()
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.close()


class TcpProxy:
    def __init__(self, host: str, port: int) -> None:
        # (host, port), or the path of a Unix socket (see ``to_unix_socket``).
        self.target: tuple[str, int] | str = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        self._frozen = threading.Event()
        self._stopped = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, name="tcp-proxy-accept", daemon=True)

    @classmethod
    def for_dsn(cls, dsn: str) -> TcpProxy:
        parts = urlsplit(dsn)
        return cls(parts.hostname or "127.0.0.1", parts.port or 5432)

    @classmethod
    def to_unix_socket(cls, path: str) -> TcpProxy:
        """A proxy listening on TCP for a server that listens on a Unix socket only (the embedded one)."""
        proxy = cls("", 0)
        proxy.target = path
        return proxy

    def start(self) -> TcpProxy:
        self._acceptor.start()
        return self

    def route(self, dsn: str) -> str:
        """The same DSN, through the proxy."""
        parts = urlsplit(dsn)
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@127.0.0.1:{self.port}" if credentials else f"127.0.0.1:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    @property
    def open_connections(self) -> int:
        with self._lock:
            return sum(1 for link in self._links if not link.closed.is_set() and not link.blackholed)

    def freeze(self) -> None:
        self._frozen.set()

    def thaw(self) -> None:
        self._frozen.clear()

    def blackhole_open(self) -> int:
        """Cuts every open connection silently; returns how many were cut."""
        with self._lock:
            cut = [link for link in self._links if not link.closed.is_set() and not link.blackholed]
            for link in cut:
                link.blackholed = True
        return len(cut)

    def stop(self) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.close()
        if self._acceptor.is_alive():
            self._acceptor.join(timeout=5)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _accept(self) -> None:
        self._listener.settimeout(_POLL * 5)
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = self._connect_upstream()
            except OSError:
                client.close()
                continue
            link = _Link(client, upstream)
            with self._lock:
                self._links = [known for known in self._links if not known.closed.is_set()]
                self._links.append(link)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(link, source, sink), daemon=True).start()

    def _connect_upstream(self) -> socket.socket:
        if isinstance(self.target, tuple):
            return socket.create_connection(self.target, timeout=5)
        upstream = socket.socket(socket.AF_UNIX)
        try:
            upstream.settimeout(5)
            upstream.connect(self.target)
        except OSError:
            upstream.close()
            raise
        return upstream

    def _pump(self, link: _Link, source: socket.socket, sink: socket.socket) -> None:
        # Neither side is read while frozen or cut: its bytes stay in the kernel's buffers and the peer sees a
        # connection that is open but never answers.
        while not self._stopped.is_set() and not link.closed.is_set():
            if link.blackholed or self._frozen.is_set():
                link.closed.wait(_POLL)
                continue
            try:
                readable, _, _ = select.select([source], [], [], _POLL)
                if not readable:
                    continue
                data = source.recv(65536)
                if link.blackholed:
                    continue  # cut while this read was under way: drop what it read, as the network would
                if not data:
                    link.close()
                    return
                # Frozen while this read was under way (the select waits up to _POLL): hold what it read until
                # the thaw. Sent on, a statement issued just after freeze() was answered as if nothing had hung.
                while self._frozen.is_set() and not link.closed.is_set() and not self._stopped.is_set():
                    link.closed.wait(_POLL)
                if link.blackholed:
                    continue
                sink.sendall(data)
            except OSError:
                link.close()
                return
