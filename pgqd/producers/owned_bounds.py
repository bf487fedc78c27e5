"""The bounds of the connection pgqd opens for itself from a DSN (``SyncClient(dsn)``).

A connection the caller passes is the caller's to bound. One pgqd opens from a DSN is pgqd's: unbounded, a
server that stopped answering or a link gone dead would hold the caller's thread for as long as the kernel keeps
trying (about 15 minutes on Linux for unacknowledged data, two hours for an idle connection). These are libpq's
own settings, which stay on the client: a pooler such as PgBouncer never sees them. A statement timeout is left
to the DSN or the role (``ALTER ROLE ... SET statement_timeout``): as a startup option it would override both,
and PgBouncer refuses the startup options it does not know.

Whatever the DSN, ``PGCONNECT_TIMEOUT`` or a service file (``service=``, ``PGSERVICE``) sets is kept.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

CONNECT_TIMEOUT_S = 10
# Data sent and not acknowledged for this long ends the connection (a host gone while it waits for an answer)...
TCP_USER_TIMEOUT_MS = 30_000
# ...and an idle connection is probed after 10 s, then every 5 s, and given up after 3 probes unanswered.
KEEPALIVES = {"keepalives": "1", "keepalives_idle": "10", "keepalives_interval": "5", "keepalives_count": "3"}


def with_default_bounds(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` (a DSN parsed into libpq's connection parameters) with the bounds nothing else sets."""
    result = dict(params)
    if "service" in result or os.environ.get("PGSERVICE"):
        return result  # a service file may set any of them; an explicit parameter would override it
    if "PGCONNECT_TIMEOUT" not in os.environ:
        result.setdefault("connect_timeout", str(CONNECT_TIMEOUT_S))
    result.setdefault("tcp_user_timeout", str(TCP_USER_TIMEOUT_MS))
    for key, value in KEEPALIVES.items():
        result.setdefault(key, value)
    return result
