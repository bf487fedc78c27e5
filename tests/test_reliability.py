"""Bad input and bad conditions never crash the daemon or lose a job: the catalogue of SPEC §11."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from pgqd import Client, JobSpec
from tests.support.daemon import Daemon, StartDaemon, daemon_config
from tests.support.fake_postgres import PasswordRefusingServer
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow


CATALOGUE = """
[entrypoints.exits]
handler = "tests.support.daemon_app:raises_system_exit"

[entrypoints.interrupts]
handler = "tests.support.daemon_app:raises_keyboard_interrupt"

[entrypoints.unserialisable]
handler = "tests.support.daemon_app:returns_unserialisable"
store_result = true

[entrypoints.measures]
handler = "tests.support.daemon_app:measures_payload"
store_result = true
"""


async def test_system_exit_and_keyboard_interrupt_in_a_handler_fail_the_job_not_the_worker(
    db: Any, start_daemon: StartDaemon
) -> None:
    daemon = start_daemon(daemon_config(processes=1, extra=CATALOGUE)).wait_ready()
    worker = daemon.worker_pids()
    client = Client(db)
    exits = await client.enqueue("exits")
    interrupts = await client.enqueue("interrupts")
    after = await client.enqueue("sleeper", "0")
    assert exits is not None
    assert interrupts is not None
    assert after is not None
    first = await client.wait(exits, timeout=20)
    second = await client.wait(interrupts, timeout=20)
    assert (first.status, first.error and first.error.type) == ("exception", "SystemExit")
    assert (second.status, second.error and second.error.type) == ("exception", "KeyboardInterrupt")
    assert (await client.wait(after, timeout=20)).status == "successful"
    assert daemon.worker_pids() == worker, "the worker process should have survived"


async def test_an_unserialisable_result_keeps_the_job_successful_and_says_why(
    db: Any, start_daemon: StartDaemon
) -> None:
    start_daemon(daemon_config(processes=1, extra=CATALOGUE)).wait_ready()
    job_id = await Client(db).enqueue("unserialisable")
    assert job_id is not None
    state = await Client(db).wait(job_id, timeout=20)
    assert state.status == "successful"
    assert state.result is None
    assert state.error is not None
    assert "not JSON-serialisable" in state.error.message


async def test_a_ten_megabyte_payload_arrives_intact(db: Any, start_daemon: StartDaemon) -> None:
    start_daemon(daemon_config(processes=1, extra=CATALOGUE)).wait_ready()
    payload = os.urandom(10 * 2**20)
    job_id = await Client(db).enqueue("measures", payload)
    assert job_id is not None
    state = await Client(db).wait(job_id, timeout=30)
    assert state.status == "successful"
    assert state.result["bytes"] == len(payload)
    assert state.result["sha256"] == hashlib.sha256(payload).hexdigest()


async def test_drain_under_load_finishes_or_releases_every_job_in_time(db: Any, start_daemon: StartDaemon) -> None:
    daemon = start_daemon(daemon_config(processes=2, shutdown_timeout="2s")).wait_ready()
    lengths = ["0.05", "0.3", "1", "5", "30"] * 12
    ids = await Client(db).enqueue_many([JobSpec("sleeper", length) for length in lengths])
    await wait_until(lambda: db.fetchval("SELECT count(*) >= 40 FROM test_runs"), timeout=20, what="jobs running")
    began = time.monotonic()
    daemon.send(signal.SIGTERM)
    assert daemon.wait(timeout=2 + 10) == 0
    took = time.monotonic() - began
    states = await Client(db).status(ids)
    finals = [states[i].status for i in ids]
    assert set(finals) <= {"successful", "queued"}, finals
    assert "picked" not in finals
    assert took < 2 + 5, f"exit took {took:.1f}s with shutdown_timeout 2s"
    released = [i for i in ids if states[i].status == "queued"]
    assert all(states[i].attempts == 0 for i in released)
    assert len(released) >= 12  # at least the 30 s jobs


def test_a_wrong_password_is_refused_at_once_without_printing_it(tmp_path: Path) -> None:
    path = tmp_path / "queue.toml"
    path.write_text(daemon_config(processes=1))
    with PasswordRefusingServer() as server:
        daemon = Daemon(path, f"postgresql://app:Wr0ng-Pa55@127.0.0.1:{server.port}/app").start()
        code = daemon.wait(timeout=30)
    log = daemon.log_text()
    assert code == 1
    assert "password authentication failed" in log
    assert "Wr0ng-Pa55" not in log
    assert server.attempts >= 1


async def test_a_schema_older_than_the_code_says_to_run_upgrade(
    db: Any, start_daemon: StartDaemon, tmp_path: Path
) -> None:
    latest = await db.fetchval("SELECT max(version) FROM pgqd_schema_version")
    if latest < 2:
        pytest.skip("needs at least two migrations")
    await db.execute("DELETE FROM pgqd_schema_version WHERE version = $1", latest)
    daemon = start_daemon(daemon_config(processes=1))
    assert daemon.wait(timeout=30) == 1
    assert "run `pgqd upgrade`" in daemon.log_text()


async def test_a_schema_newer_than_the_code_is_accepted_for_rolling_upgrades(
    db: Any, start_daemon: StartDaemon
) -> None:
    await db.execute("INSERT INTO pgqd_schema_version (version, name) VALUES (999, 'from a newer pgqd')")
    daemon = start_daemon(daemon_config(processes=1)).wait_ready()
    job_id = await Client(db).enqueue("sleeper", "0")
    assert job_id is not None
    assert (await Client(db).wait(job_id, timeout=20)).status == "successful"
    warning = "the database schema is newer than this pgqd: running on it (migrations only add);"
    assert daemon.has_event(warning + " roll out the new pgqd version")
