"""Loopback ports for the PostgreSQL servers that tests and benchmarks start themselves, in ranges that do not
overlap.

The ranges lie below Linux's ephemeral range (``ip_local_port_range``, 32768-60999 by default): the suite opens
thousands of loopback connections, and a port in that range can be taken by one of them, as its local end, between
the check and the server's start. The server then cannot listen on loopback, and every connection to it is refused.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

REPLICATION_PORTS = range(30000, 30100)  # a primary and its standby (tests/support/replication.py)
FLEET_PORTS = range(30100, 30200)  # the fleet's database (tests/support/netns.py)
PRIVATE_CLUSTER_PORTS = range(30200, 30300)  # the benchmarks' private clusters (benchmarks/private_cluster.py)


def free_ports(ports: Sequence[int], count: int) -> list[int]:
    """``count`` ports of ``ports`` (tried in their order) that nothing listens on and that can be bound on loopback
    now."""
    found: list[int] = []
    for port in ports:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                continue  # something listens there
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    raise RuntimeError(f"no {count} free ports in {min(ports)}-{max(ports)}")
