"""What ``pgqd web`` is started with: the database and its time bounds, the names, the entrypoints, who may use
it, and which reverse proxies it believes about the client's address and scheme."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from pgqd.backend.bounded import DatabaseTimeouts
from pgqd.config.load import WebCredentials
from pgqd.errors import ConfigError
from pgqd.identifiers import Names

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# A proxy on this machine is as trusted as the machine (uvicorn's default, kept).
LOOPBACK_PROXIES = ("127.0.0.1", "::1")


def proxy_networks(entries: tuple[str, ...] | list[str]) -> tuple[Network, ...]:
    """Addresses or networks ("10.0.0.5", "10.1.0.0/16", "::1") of the reverse proxies to trust."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ConfigError(
                f"trusted proxy {entry!r} is not an IP address or network (e.g. 10.0.0.5 or 10.1.0.0/16)"
            ) from None
    return tuple(networks)


@dataclass(frozen=True)
class WebSettings:
    dsn: str | None
    names: Names
    entrypoints: tuple[str, ...] = ()
    # Each configured entrypoint's run timeout in seconds, for the running-jobs view.
    run_timeouts: tuple[tuple[str, float], ...] = ()
    read_only: bool = False
    credentials: WebCredentials = field(default_factory=lambda: WebCredentials("pgqd", None, None))
    pool_size: int = 4
    # A replica for the read pages (None: they read from ``dsn``); changes always go to ``dsn``.
    read_dsn: str | None = None
    # The daemon's bounds: a page waits at most this long for the database, then answers 503.
    timeouts: DatabaseTimeouts = field(default_factory=DatabaseTimeouts)
    trusted_proxies: tuple[Network, ...] = field(default_factory=lambda: proxy_networks(LOOPBACK_PROXIES))
    # Wrong credentials allowed per client address in a window of this many seconds, then 429 until it ends.
    login_failures: int = 10
    login_window: float = 60.0
