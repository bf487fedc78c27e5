"""Running things the way they run in production, on this machine: pgqd as PID 1 of its own PID namespace (as
in a container), and a PgBouncer in transaction-pooling mode in front of the test server."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

from tests.support.daemon import Daemon, free_port, wait_for


# --- pgqd as PID 1 ---------------------------------------------------------------------------------------------
class PidOneDaemon(Daemon):
    """``unshare --pid --fork --mount-proc pgqd --config FILE``: pgqd is PID 1 of a new PID namespace, the
    process that receives the container runtime's SIGTERM and inherits every orphan. ``pid`` is its pid as seen
    from outside the namespace (this is where signals are sent from, as a container runtime does)."""

    launched_as_child = True

    def __init__(self, config_path: Path, dsn: str, unshare: str) -> None:
        super().__init__(config_path, dsn)
        self.unshare = unshare

    def command(self) -> list[str]:
        return [self.unshare, "--pid", "--fork", "--mount-proc", *super().command()]


def command_line(pid: int) -> str:
    """The command line of a live process; empty once it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def namespace_pid(pid: int) -> int:
    """The pid of process ``pid`` inside its own (innermost) PID namespace."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise AssertionError(f"no NSpid line for process {pid}")


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    ppid: int
    state: str
    command: str


def processes_in_namespace_of(init_pid: int) -> list[ProcessInfo]:
    """Every process in the PID namespace of ``init_pid`` (pids as seen from outside)."""
    try:
        namespace = os.readlink(f"/proc/{init_pid}/ns/pid")
    except OSError:
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "ns" / "pid") != namespace:
                continue
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue  # gone meanwhile
        # The command name in parentheses may hold spaces: the fields after it are state, ppid, ...
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        found.append(ProcessInfo(int(entry.name), int(ppid), state, command))
    return found


# --- PgBouncer -------------------------------------------------------------------------------------------------
class PgBouncer:
    """A PgBouncer in transaction-pooling mode on a free loopback port, in front of the server of ``dsn``, with
    trust authentication. Runs in the foreground as this test's child and is stopped by its pid."""

    def __init__(self, binary: str, server_dsn: str) -> None:
        self.binary = binary
        self.server = urlsplit(server_dsn)
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="pgqd-pgbouncer-"))
        self.process: subprocess.Popen[bytes] | None = None

    def dsn(self, database: str) -> str:
        """A DSN of ``database`` through the bouncer, as the same user as the server DSN."""
        user = self.server.username or "postgres"
        return urlunsplit(("postgresql", f"{user}@127.0.0.1:{self.port}", "/" + database, "", ""))

    def start(self) -> PgBouncer:
        user = self.server.username or "postgres"
        query = parse_qs(self.server.query)
        # A TCP server, or the Unix socket directory of the embedded one (?host=/dir&port=N).
        host = self.server.hostname or query.get("host", ["127.0.0.1"])[0]
        port = self.server.port or query.get("port", ["5432"])[0]
        # With trust in front, PgBouncer logs in to the server with the password listed here (if any).
        (self.folder / "users.txt").write_text(f'"{user}" "{self.server.password or ""}"\n')
        (self.folder / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={host} port={port}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {self.folder / 'users.txt'}\n"
            "pool_mode = transaction\ndefault_pool_size = 4\nmax_client_conn = 100\n"
            "ignore_startup_parameters = extra_float_digits\n"
        )
        command = [self.binary]
        if os.geteuid() == 0:
            # PgBouncer refuses to run as root: drop to an unprivileged user that can read the config.
            command += ["-u", _unprivileged_user()]
            self.folder.chmod(0o755)
            for path in self.folder.iterdir():
                path.chmod(0o644)
        self.log_path = self.folder / "pgbouncer.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [*command, str(self.folder / "pgbouncer.ini")], stdout=log, stderr=subprocess.STDOUT
            )
        wait_for(self._accepting, timeout=10, what="PgBouncer to listen")
        return self

    def _accepting(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"PgBouncer exited: {self.log_path.read_text(errors='replace')}")
        with socket.socket() as probe:
            probe.settimeout(0.5)
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        shutil.rmtree(self.folder, ignore_errors=True)

    @contextlib.contextmanager
    def running(self) -> Iterator[PgBouncer]:
        try:
            yield self.start()
        finally:
            self.stop()


def _unprivileged_user() -> str:
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name).pw_name
    raise AssertionError("no unprivileged user (postgres or nobody) to run PgBouncer as")
