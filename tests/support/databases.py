"""Finding the PostgreSQL server the tests run against: $PGQD_TEST_DSN, else the local server on
127.0.0.1:5432, else a private embedded server started for the test session (the `embedded` extra;
PGQD_TEST_EMBEDDED=1 chooses it even when a local server answers)."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

from pgqd.daemon.embedded import EmbeddedServer

LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def local_server_answers() -> bool:
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", 5432)) == 0


class TestServer:
    """The server of this test session; ``stop`` ends it if the session started it."""

    def __init__(self) -> None:
        self.embedded: EmbeddedServer | None = None
        explicit = os.environ.get("PGQD_TEST_DSN")
        if explicit:
            self.dsn = explicit
        elif local_server_answers() and not os.environ.get("PGQD_TEST_EMBEDDED"):
            self.dsn = LOCAL_SERVER
        else:
            folder = Path(tempfile.mkdtemp(prefix="pgqd-tests-"))
            self.embedded = EmbeddedServer(folder / "pgdata")
            self.dsn = self.embedded.start()

    def stop(self) -> None:
        if self.embedded is not None:
            self.embedded.stop()


def with_database(dsn: str, database: str) -> str:
    """The same server and credentials, another database."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def libpq_environment(dsn: str) -> dict[str, str]:
    """The PG* variables that reach the same server as ``dsn``."""
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    env = {
        "PGHOST": parts.hostname or query.get("host", [""])[0],
        "PGUSER": parts.username or "postgres",
        "PGDATABASE": parts.path.lstrip("/") or "postgres",
    }
    port = parts.port or (query.get("port", [""])[0] or None)
    if port:
        env["PGPORT"] = str(port)
    return env
