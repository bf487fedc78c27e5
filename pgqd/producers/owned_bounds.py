"""The bounds of the connection pgqd opens for itself from a DSN (``SyncClient(dsn)``).

A connection the caller passes is the caller's to bound. One pgqd opens from a DSN is pgqd's: without bounds, a
lock held by another session, a server that stopped answering or a link gone dead would hold the caller's thread
for as long as the kernel keeps retrying (about 15 minutes on Linux). Whatever the DSN sets itself is kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Each statement: cancelled by the server after this (statement_timeout)...
STATEMENT_TIMEOUT_MS = 30_000
# ...and the connection given up by the client when its packets stay unacknowledged this long (a host gone).
TCP_USER_TIMEOUT_MS = 30_000
CONNECT_TIMEOUT_S = 10


def bounded(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` (a DSN parsed into libpq's connection parameters) with the bounds it does not set itself."""
    result = dict(params)
    result.setdefault("connect_timeout", str(CONNECT_TIMEOUT_S))
    result.setdefault("tcp_user_timeout", str(TCP_USER_TIMEOUT_MS))
    options = str(result.get("options") or "")
    if "statement_timeout" not in options:
        result["options"] = f"{options} -c statement_timeout={STATEMENT_TIMEOUT_MS}".strip()
    return result
