"""A private PostgreSQL cluster for a benchmark that needs server settings of its own (autovacuum on or off),
so that a shared server is never reconfigured.

initdb and postgres of the machine's PostgreSQL (``$PGQD_BENCH_PGBIN``, by default /usr/lib/postgresql/15/bin) in a
temporary folder, on a free loopback port of ``PRIVATE_CLUSTER_PORTS`` (tests/support/ports.py), every setting at
its default except those given; run as the ``postgres`` user when this process is root (PostgreSQL refuses to run
as root). Stopped (fast shutdown) and deleted when the block ends.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.ports import PRIVATE_CLUSTER_PORTS, free_ports


def server_binaries() -> Path:
    """``$PGQD_BENCH_PGBIN``, else the machine's PostgreSQL 15 (the version the figures were taken on), else its
    newest."""
    if "PGQD_BENCH_PGBIN" in os.environ:
        return Path(os.environ["PGQD_BENCH_PGBIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    fifteen = Path("/usr/lib/postgresql/15/bin")
    return fifteen if (fifteen / "initdb").exists() or not found else found[-1].parent


PGBIN = server_binaries()
START_TIMEOUT = 60.0


def free_port() -> int:
    # Below the ephemeral range, like the tests' own servers: the soak's test runs one of these in the suite.
    return free_ports(PRIVATE_CLUSTER_PORTS, 1)[0]


def as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def server_pid(data: Path) -> int | None:
    """The postmaster's pid, from the pid file it writes once it runs."""
    with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
        return int((data / "postmaster.pid").read_text().splitlines()[0])
    return None


@contextlib.contextmanager
def private_cluster(settings: dict[str, str]) -> Iterator[str]:
    """Yields the maintenance DSN of a new cluster running with ``settings`` (name -> value)."""
    folder = Path(tempfile.mkdtemp(prefix="pgqd-bench-cluster-"))
    data = folder / "data"
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    process: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(
            as_server_user([str(PGBIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"]),
            check=True, capture_output=True,
        )  # fmt: skip
        port = free_port()
        options = {"listen_addresses": "127.0.0.1", "unix_socket_directories": str(folder), **settings}
        command = [str(PGBIN / "postgres"), "-D", str(data), "-p", str(port)]
        command += [part for name, value in options.items() for part in ("-c", f"{name}={value}")]
        with open(folder / "server.log", "wb") as log:
            process = subprocess.Popen(as_server_user(command), stdout=log, stderr=subprocess.STDOUT)
        wait_for_connections(port, process, folder / "server.log")
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        if process is not None:
            stop(process, data)
        shutil.rmtree(folder, ignore_errors=True)


def wait_for_connections(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        ready = subprocess.run([str(PGBIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True)
        if ready.returncode == 0:
            return
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the private cluster did not start:\n{log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.2)


def stop(process: subprocess.Popen[bytes], data: Path) -> None:
    """Fast shutdown of the postmaster this module started (SIGINT), then of its runuser wrapper if need be."""
    pid = server_pid(data)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
