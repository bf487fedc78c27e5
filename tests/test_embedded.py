"""The zero-setup run: the daemon starts its own PostgreSQL from `[database] embedded`, stops it on exit, and
adopts a server left behind by a supervisor that was SIGKILLed."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from pgqd.daemon.embedded import running_dsn
from tests.support.cli import run_pgqd
from tests.support.daemon import Daemon, daemon_config, wait_for

pytestmark = pytest.mark.slow


def postmaster_pid(pgdata: Path) -> int | None:
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return pid


def test_embedded_database_lifecycle(tmp_path: Path) -> None:
    pgdata = tmp_path / "pgdata"
    config = tmp_path / "queue.toml"
    config.write_text(
        '[database]\nembedded = "pgdata"\n'
        + daemon_config(processes=1)
        .replace('resources = "tests.support.daemon_app:lifespan"', "")
        .replace('handler = "tests.support.daemon_app:sleeper"', 'handler = "benchmarks.handlers:noop"')
    )
    first = Daemon(config, dsn="", env={"PGQD_DSN": ""}).start().wait_ready(timeout=60)
    assert postmaster_pid(pgdata) is not None
    enqueued = run_pgqd("enqueue", "--config", str(config), "sleeper", "--count", "3")
    assert enqueued.returncode == 0, enqueued.stderr
    wait_for(
        lambda: "successful" in run_pgqd("jobs", "list", "--config", str(config), "--status", "successful").stdout,
        timeout=30,
        what="the jobs to run on the embedded database",
    )
    # A SIGKILLed supervisor leaves its server running; the next start adopts it and stops it at exit.
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    left_behind = postmaster_pid(pgdata)
    assert left_behind is not None
    assert running_dsn(pgdata) is not None
    second = Daemon(config, dsn="", env={"PGQD_DSN": ""}).start().wait_ready(timeout=60)
    assert postmaster_pid(pgdata) == left_behind
    second.send(signal.SIGTERM)
    assert second.wait(timeout=30) == 0
    wait_for(lambda: postmaster_pid(pgdata) is None, timeout=30, what="the embedded server to stop")
