"""A private primary and hot standby on this machine, for failover drills.

Two PostgreSQL clusters of the Debian server binaries (``/usr/lib/postgresql/N/bin``, the newest installed, or
$PGQD_TEST_PG_BIN), each in a temporary directory, on loopback ports 30000-30099: the primary, and a standby
cloned from it with ``pg_basebackup`` that streams its WAL, synchronously (the primary's commits wait until the
standby has flushed them: ``synchronous_standby_names``) or asynchronously. ``crash_primary`` stops the primary
the way a crash does (``pg_ctl stop -m immediate``) and ``promote`` makes the standby the new primary. The shared
server the rest of the suite uses is never touched.

As root, the clusters run as the ``postgres`` user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Self

import asyncpg

from tests.support.ports import REPLICATION_PORTS, free_ports
from tests.support.tcp_proxy import TcpProxy

STANDBY_NAME = "pgqd_standby"
# Settings of both servers (the standby starts from the primary's files). fsync off: a drill crashes the server,
# never the host, so what was written reaches the disk anyway, and the shared machine is spared the flushes.
COMMON_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "120",
    "shared_buffers": "64MB",
    "wal_level": "replica",
    "max_wal_senders": "5",
    "wal_keep_size": "256MB",
    "hot_standby": "on",
    "fsync": "off",
    "wal_receiver_status_interval": "1s",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] '",
}


def server_binaries() -> Path | None:
    """The directory of the PostgreSQL server programs, or None when this machine has none."""
    explicit = os.environ.get("PGQD_TEST_PG_BIN")
    candidates = [Path(explicit)] if explicit else sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for folder in candidates:
        if all((folder / name).exists() for name in ("initdb", "pg_ctl", "pg_basebackup")):
            return folder
    return None


class Cluster:
    """One PostgreSQL server of the pair: its data directory, port and log."""

    def __init__(self, name: str, folder: Path, port: int, binaries: Path, user: str | None) -> None:
        self.name = name
        self.pgdata = folder / name
        self.port = port
        self.log = folder / f"{name}.log"
        self.socket_dir = folder
        self._bin = binaries
        self._user = user

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def run(self, program: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        command = [str(self._bin / program), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, user=self._user)
        if result.returncode != 0:
            raise RuntimeError(f"{program} failed ({result.returncode}): {result.stderr.strip()}\n{self.log_tail()}")
        return result

    def start(self, **settings: str) -> None:
        options = {"port": str(self.port), "unix_socket_directories": f"'{self.socket_dir}'", **settings}
        line = " ".join(f"-c {key}={value}" for key, value in options.items())
        self.run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.pgdata), "-l", str(self.log), "-o", line)

    def stop(self, mode: str = "fast") -> None:
        self.run("pg_ctl", "stop", "-w", "-t", "60", "-D", str(self.pgdata), "-m", mode)

    def running(self) -> bool:
        status = subprocess.run(
            [str(self._bin / "pg_ctl"), "status", "-D", str(self.pgdata)], capture_output=True, user=self._user
        )
        return status.returncode == 0

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


class ReplicatedPair:
    """A primary and a streaming hot standby; use as a context manager (both are stopped and removed after).

    ``synchronous``: a commit on the primary returns only once the standby has flushed its WAL, so no
    acknowledged commit is lost when the primary dies. Otherwise the standby trails by whatever was in flight.
    """

    def __init__(self, *, synchronous: bool, through_proxy: bool = False, binaries: Path | None = None) -> None:
        found = binaries or server_binaries()
        if found is None:
            raise RuntimeError("no PostgreSQL server binaries (set PGQD_TEST_PG_BIN or install postgresql)")
        self.synchronous = synchronous
        self.folder = Path(tempfile.mkdtemp(prefix="pgqd-repl-"))
        user = "postgres" if os.geteuid() == 0 else None
        if user is not None:
            account = pwd.getpwnam(user)
            os.chown(self.folder, account.pw_uid, account.pw_gid)
        primary_port, standby_port = free_ports(REPLICATION_PORTS, 2)
        self.primary = Cluster("primary", self.folder, primary_port, found, user)
        self.standby = Cluster("standby", self.folder, standby_port, found, user)
        self.promoted = False
        # The standby's replication link through a proxy that can hold it (``hold_replication``).
        self.link = TcpProxy("127.0.0.1", primary_port) if through_proxy else None

    def start(self) -> Self:
        primary, standby = self.primary, self.standby
        primary.run("initdb", "-D", str(primary.pgdata), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        with (primary.pgdata / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in COMMON_SETTINGS.items())
        # Only the primary waits for a standby: given to the standby too, its commits would hang once promoted.
        sync = {"synchronous_standby_names": f"'{STANDBY_NAME}'"} if self.synchronous else {}
        primary.start(**sync)
        standby.run(
            "pg_basebackup",
            *("-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres"),
            *("-D", str(standby.pgdata), "-X", "stream", "-c", "fast", "--no-sync", "-R"),
        )
        link_port = self.link.start().port if self.link is not None else primary.port
        conninfo = f"host=127.0.0.1 port={link_port} user=postgres application_name={STANDBY_NAME}"
        with (standby.pgdata / "postgresql.auto.conf").open("a") as conf:
            conf.write(f"primary_conninfo = '{conninfo}'\n")
        standby.start()
        self.wait_streaming()
        return self

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.link is not None:
            self.link.stop()
        for cluster in (self.primary, self.standby):
            if cluster.pgdata.exists() and cluster.running():
                with contextlib.suppress(Exception):
                    cluster.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)

    # --- addresses ---------------------------------------------------------------------------------------
    def multi_host_dsn(self, database: str, target_session_attrs: str | None = "read-write") -> str:
        """Both servers in one DSN, the primary first, as an application lists the members of a cluster."""
        hosts = f"127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}"
        query = f"?target_session_attrs={target_session_attrs}" if target_session_attrs else ""
        return f"postgresql://postgres@{hosts}/{database}{query}"

    # --- state -------------------------------------------------------------------------------------------
    def replication_state(self) -> tuple[str, str] | None:
        """The standby's (state, sync_state) as the primary sees it, e.g. ("streaming", "sync")."""
        result = self.primary.run(
            "psql",
            *("-h", "127.0.0.1", "-p", str(self.primary.port), "-U", "postgres", "-XAtq", "-d", "postgres"),
            *("-c", f"SELECT state, sync_state FROM pg_stat_replication WHERE application_name = '{STANDBY_NAME}'"),
        )
        line = result.stdout.strip()
        if not line:
            return None
        state, sync_state = line.split("|")
        return state, sync_state

    def wait_streaming(self, timeout: float = 60) -> None:
        wanted = "sync" if self.synchronous else "async"
        deadline = time.monotonic() + timeout
        while (state := self.replication_state()) != ("streaming", wanted):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the standby is not streaming ({state}):\n{self.standby.log_tail()}")
            time.sleep(0.1)

    async def create_database(self, name: str) -> str:
        """A database on the primary (replicated to the standby); returns its multi-host DSN."""
        admin = await asyncpg.connect(self.primary.dsn())
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        await self.wait_replayed()
        return self.multi_host_dsn(name)

    async def wait_replayed(self, timeout: float = 60) -> None:
        """Until the standby has applied everything the primary wrote so far (not only received it)."""
        deadline = time.monotonic() + timeout
        while (lag := await self.standby_lag_bytes()) > 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the standby still trails by {lag} bytes after {timeout:g}s")
            await asyncio.sleep(0.05)

    # --- the failover ------------------------------------------------------------------------------------
    def hold_replication(self) -> None:
        """The standby receives nothing more (its link hangs), as when it lags behind a busy primary."""
        if self.link is None:
            raise RuntimeError("the pair was built without through_proxy=True")
        self.link.freeze()

    def crash_primary(self) -> None:
        """Every process of the primary quits at once: open connections break, commits in flight vanish."""
        self.primary.stop("immediate")

    def promote(self) -> None:
        """Ends the standby's recovery (it replays what it received first); returns once it accepts writes."""
        self.standby.run("pg_ctl", "promote", "-w", "-t", "60", "-D", str(self.standby.pgdata))
        self.promoted = True

    async def standby_lag_bytes(self) -> int:
        """How far the standby's replay trails the primary's WAL, in bytes (0 once caught up)."""
        conn: Any = await asyncpg.connect(self.primary.dsn())
        try:
            lag = await conn.fetchval(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) FROM pg_stat_replication"
                " WHERE application_name = $1",
                STANDBY_NAME,
            )
        finally:
            await conn.close()
        if lag is None:
            raise RuntimeError("the standby is not connected to the primary")
        return int(lag)
