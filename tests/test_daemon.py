"""The real daemon as users run it: `pgqd --config queue.toml` in a subprocess, against a fresh database."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from pgqd import Client, JobSpec
from tests.support.daemon import StartDaemon, daemon_config, wait_for
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow


async def statuses(db: Any) -> dict[str, int]:
    rows = await db.fetch(
        "SELECT status::text, count(*) FROM pgqd_jobs GROUP BY 1 UNION ALL"
        " SELECT 'log:' || status::text, count(*) FROM pgqd_log GROUP BY 1"
    )
    return {row[0]: row[1] for row in rows}


async def test_daemon_starts_workers_and_runs_jobs(db: Any, start_daemon: StartDaemon) -> None:
    daemon = start_daemon(daemon_config(processes=2)).wait_ready()
    ids = await Client(db).enqueue_many([JobSpec("sleeper", "0.01") for _ in range(50)])
    await wait_until(
        lambda: db.fetchval("SELECT count(*) = 50 FROM pgqd_log WHERE status = 'successful'"),
        timeout=20,
        what="50 jobs to finish",
    )
    pids = {row[0] for row in await db.fetch("SELECT DISTINCT pid FROM test_runs")}
    assert pids <= set(daemon.worker_pids())
    assert len(daemon.worker_pids()) == 2
    assert await db.fetchval("SELECT count(*) FROM test_runs WHERE job_id = ANY($1::bigint[])", ids) == 50
    assert daemon.stop() == 0


async def test_sigterm_finishes_short_jobs_and_releases_long_ones(db: Any, start_daemon: StartDaemon) -> None:
    daemon = start_daemon(daemon_config(processes=2, shutdown_timeout="2s")).wait_ready()
    client = Client(db)
    short = await client.enqueue_many([JobSpec("sleeper", "0.5") for _ in range(4)])
    long = await client.enqueue_many([JobSpec("sleeper", "60") for _ in range(3)])
    await wait_until(lambda: db.fetchval("SELECT count(*) = 7 FROM test_runs"), timeout=15, what="all 7 jobs to start")
    began = time.monotonic()
    daemon.send(signal.SIGTERM)
    assert daemon.wait(timeout=2 + 8) == 0
    took = time.monotonic() - began
    assert took < 2 + 5, f"drain took {took:.1f}s"
    states = await client.status(short + long)
    assert {states[i].status for i in short} == {"successful"}
    assert {states[i].status for i in long} == {"queued"}
    assert {states[i].attempts for i in long} == {0}  # a released run does not count as an attempt
    # A second daemon picks the released jobs up.
    await db.execute("UPDATE pgqd_jobs SET payload = '0.01'::bytea WHERE id = ANY($1::bigint[])", long)
    start_daemon(daemon_config(processes=1)).wait_ready()
    await wait_until(
        lambda: db.fetchval("SELECT count(*) = 7 FROM pgqd_log WHERE status = 'successful'"),
        timeout=20,
        what="the released jobs to run on the second daemon",
    )


async def test_sigkill_of_a_worker_requeues_its_job_at_once_and_replaces_the_worker(
    db: Any, start_daemon: StartDaemon
) -> None:
    daemon = start_daemon(daemon_config(processes=1, worker_timeout="60s")).wait_ready()
    client = Client(db)
    job_id = await client.enqueue("sleeper", "3")
    run = await wait_until(
        lambda: db.fetchrow("SELECT pid FROM test_runs WHERE job_id = $1", job_id), timeout=15, what="job start"
    )
    os.kill(run["pid"], signal.SIGKILL)
    killed_at = time.monotonic()
    second = await wait_until(
        lambda: db.fetchrow("SELECT pid, attempt FROM test_runs WHERE job_id = $1 AND pid <> $2", job_id, run["pid"]),
        timeout=15,
        what="the job to run again on a new worker",
    )
    assert time.monotonic() - killed_at < 10  # far below the 60 s worker_timeout
    # A worker's death never spends a retry attempt.
    assert second["attempt"] == 1
    assert run["pid"] not in daemon.worker_pids()
    assert len(daemon.worker_pids()) == 1
    state = await client.wait(job_id, timeout=20)
    assert state.status == "successful"


async def test_a_worker_with_a_blocked_event_loop_is_killed_and_replaced(db: Any, start_daemon: StartDaemon) -> None:
    config = daemon_config(
        processes=1,
        worker_timeout="2s",
        extra='\n[entrypoints.loop_blocker]\nhandler = "tests.support.daemon_app:loop_blocker"\n',
    )
    daemon = start_daemon(config).wait_ready()
    first_pid = daemon.worker_pids()[0]
    await Client(db).enqueue("loop_blocker", "120")
    wait_for(lambda: first_pid not in daemon.worker_pids(), timeout=20, what="the blocked worker to be killed")
    wait_for(lambda: len(daemon.worker_pids()) == 1, timeout=20, what="a replacement worker")
    assert daemon.has_event("worker stopped checking in (blocked event loop?): killing it")
    # The replacement still serves other jobs.
    job_id = await Client(db).enqueue("sleeper", "0")
    assert (await Client(db).wait(job_id, timeout=20)).status == "successful"


async def test_sighup_adds_an_entrypoint_without_losing_or_repeating_jobs(
    db: Any, start_daemon: StartDaemon, tmp_path: Path
) -> None:
    daemon = start_daemon(daemon_config(processes=1, shutdown_timeout="5s")).wait_ready()
    client = Client(db)
    other = await client.enqueue("other")
    busy = await client.enqueue_many([JobSpec("sleeper", "0.3") for _ in range(20)])
    await asyncio.sleep(0.5)
    assert (await client.status([other]))[other].status == "queued"
    daemon.config_path.write_text(
        daemon_config(processes=1, shutdown_timeout="5s")
        + '\n[entrypoints.other]\nhandler = "tests.support.daemon_app:other"\n'
    )
    daemon.send(signal.SIGHUP)
    assert (await client.wait(other, timeout=20)).status == "successful"
    for job_id in busy:
        assert (await client.wait(job_id, timeout=30)).status == "successful"
    runs = await db.fetch("SELECT job_id, count(*) FROM test_runs GROUP BY job_id HAVING count(*) > 1")
    assert runs == []
    assert daemon.has_event("reloaded config: starting new workers, draining old ones")


async def test_sighup_with_a_broken_config_keeps_the_old_one(db: Any, start_daemon: StartDaemon) -> None:
    daemon = start_daemon(daemon_config(processes=1)).wait_ready()
    workers = daemon.worker_pids()
    daemon.config_path.write_text("[workers\nprocesses = ")
    daemon.send(signal.SIGHUP)
    wait_for(
        lambda: daemon.has_event("reload refused: the new config is invalid; running on the old one"),
        timeout=10,
        what="the reload to be refused",
    )
    assert daemon.worker_pids() == workers
    job_id = await Client(db).enqueue("sleeper", "0")
    assert (await Client(db).wait(job_id, timeout=20)).status == "successful"


async def test_workers_crashing_in_a_loop_stop_the_daemon_with_an_error(db: Any, start_daemon: StartDaemon) -> None:
    daemon = start_daemon(daemon_config(processes=2), env={"PGQD_TEST_BROKEN_RESOURCES": "1"})
    code = daemon.wait(timeout=60)
    assert code == 1
    log = daemon.log_text()
    assert "the test resources are broken on purpose" in log
    assert "workers are crashing in a loop: giving up" in log


async def test_workers_are_recycled_after_max_jobs_without_losing_jobs(db: Any, start_daemon: StartDaemon) -> None:
    config = daemon_config(processes=1, workers_extra="max_jobs_per_worker = 20")
    daemon = start_daemon(config).wait_ready()
    ids = await Client(db).enqueue_many([JobSpec("sleeper", "0.01") for _ in range(100)])
    await wait_until(
        lambda: db.fetchval("SELECT count(*) = 100 FROM pgqd_log WHERE status = 'successful'"),
        timeout=40,
        what="100 jobs across recycled workers",
    )
    pids = await db.fetchval("SELECT count(DISTINCT pid) FROM test_runs WHERE job_id = ANY($1::bigint[])", ids)
    assert pids >= 3
    assert await db.fetchval("SELECT count(*) FROM test_runs") == 100  # nothing ran twice
    assert daemon.has_event("recycling worker")


async def test_systemd_notifications_arrive_in_order(db: Any, start_daemon: StartDaemon, tmp_path: Path) -> None:
    address = tmp_path / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(address))
    receiver.settimeout(20)
    try:
        daemon = start_daemon(
            daemon_config(processes=1),
            env={"NOTIFY_SOCKET": str(address), "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": ""},
        ).wait_ready()
        messages: list[str] = []

        def receive_until(marker: str) -> None:
            while not any(marker in m for m in messages):
                messages.append(receiver.recv(4096).decode())

        receive_until("READY=1")
        receive_until("WATCHDOG=1")
        daemon.send(signal.SIGHUP)
        receive_until("RELOADING=1")
        count = len(messages)
        while not any("READY=1" in m for m in messages[count:]):
            messages.append(receiver.recv(4096).decode())
        daemon.send(signal.SIGTERM)
        receive_until("STOPPING=1")
        assert daemon.wait(timeout=20) == 0
    finally:
        receiver.close()
    kinds = [line.split("=")[0] for m in messages for line in m.splitlines() if line.split("=")[0] != "WATCHDOG"]
    significant = [k for k in kinds if k in ("READY", "RELOADING", "STOPPING")]
    assert significant == ["READY", "RELOADING", "READY", "STOPPING"]
    assert any(line.startswith("STATUS=1 workers running") for m in messages for line in m.splitlines())
