"""Observability of the real daemon: /metrics over every worker, health endpoints, logs without secrets."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pgqd import Client, JobSpec
from tests.support.daemon import Daemon, StartDaemon, daemon_config, free_port, http_get, wait_for
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow


def samples(text: str, family: str) -> dict[str, float]:
    """The samples of one metric family, keyed by their label text."""
    found = {}
    for line in text.splitlines():
        if line.startswith(family) and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            found[key[len(family) :]] = float(value)
    return found


def _nonzero(found: dict[str, float]) -> dict[str, float]:
    return {key: value for key, value in found.items() if value}


async def test_metrics_add_up_across_two_worker_processes(db: Any, start_daemon: StartDaemon, tmp_path: Path) -> None:
    port = free_port()
    start_daemon(daemon_config(processes=2, metrics_port=port)).wait_ready()
    client = Client(db)
    await client.enqueue_many([JobSpec("sleeper", "0.02") for _ in range(200)])
    await client.enqueue_many([JobSpec("nobody_serves_this") for _ in range(3)])
    await wait_until(lambda: db.fetchval("SELECT count(*) = 200 FROM pgqd_log"), timeout=30, what="200 jobs to finish")
    pids = {row[0] for row in await db.fetch("SELECT DISTINCT pid FROM test_runs")}
    assert len(pids) == 2, "both worker processes should have run jobs"
    # Workers move their figures into the shared files a fraction of a second after a flush.
    status, text = wait_for(
        lambda: (
            (r := http_get(port, "/metrics"))
            and samples(r[1], "pgqd_jobs_completed_total").get('{entrypoint="sleeper",outcome="successful"}') == 200
            and r
        ),
        timeout=10,
        what="the scrape to count 200 jobs",
    )
    assert status == 200
    completed = samples(text, "pgqd_jobs_completed_total")
    assert completed == {'{entrypoint="sleeper",outcome="successful"}': 200.0}
    assert samples(text, "pgqd_job_duration_seconds_count") == {'{entrypoint="sleeper"}': 200.0}
    assert samples(text, "pgqd_job_pickup_latency_seconds_count") == {'{entrypoint="sleeper"}': 200.0}
    assert samples(text, "pgqd_jobs_in_flight") == {'{entrypoint="sleeper"}': 0.0}
    assert samples(text, "pgqd_claim_batch_size_sum")[""] == 200.0
    assert samples(text, "pgqd_workers_running") == {"": 2.0}
    # A job for an entrypoint no worker serves stays queued, and shows once the lead worker next collects the
    # queue gauges (every few seconds). Served entrypoints have their series from the start, at 0 when idle.
    waiting = {'{entrypoint="nobody_serves_this",status="queued"}': 3.0}
    text = wait_for(
        lambda: (t := http_get(port, "/metrics")[1]) and _nonzero(samples(t, "pgqd_queue_depth")) == waiting and t,
        timeout=15,
        what="the queue gauges to show the 3 waiting jobs",
    )
    assert samples(text, "pgqd_queue_depth")['{entrypoint="sleeper",status="queued"}'] == 0.0
    assert samples(text, "pgqd_oldest_job_age_seconds")['{entrypoint="nobody_serves_this"}'] >= 0
    assert 'pgqd_build_info{python="' in text
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing in CI: scripts/install-test-tools.sh installs it")
        pytest.skip("promtool not installed (scripts/install-test-tools.sh installs it)")
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr


async def test_a_dead_worker_counts_a_restart_and_its_samples_stay_counted(db: Any, start_daemon: StartDaemon) -> None:
    port = free_port()
    daemon = start_daemon(daemon_config(processes=1, metrics_port=port)).wait_ready()
    ids = await Client(db).enqueue_many([JobSpec("sleeper", "0") for _ in range(20)])
    await wait_until(lambda: db.fetchval("SELECT count(*) = 20 FROM pgqd_log"), timeout=20, what="20 jobs")
    counted = '{entrypoint="sleeper",outcome="successful"}'
    wait_for(
        lambda: samples(http_get(port, "/metrics")[1], "pgqd_jobs_completed_total").get(counted) == 20.0,
        timeout=10,
        what="the worker to publish its samples",
    )
    first = daemon.worker_pids()[0]
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: daemon.replaced(first), timeout=20, what="a new worker")
    _, text = http_get(port, "/metrics")
    assert samples(text, "pgqd_worker_restarts_total") == {'{reason="killed"}': 1.0}
    assert samples(text, "pgqd_jobs_completed_total") == {
        '{entrypoint="sleeper",outcome="successful"}': float(len(ids))
    }


async def test_health_and_readiness(db: Any, start_daemon: StartDaemon) -> None:
    port = free_port()
    daemon = start_daemon(daemon_config(processes=2, metrics_port=port, shutdown_timeout="10s")).wait_ready()
    assert http_get(port, "/healthz") == (200, "ok\n")
    wait_for(lambda: http_get(port, "/readyz")[0] == 200, timeout=15, what="/readyz to turn ready")
    assert http_get(port, "/nope")[0] == 404
    await Client(db).enqueue("sleeper", "30")
    await wait_until(lambda: db.fetchval("SELECT count(*) = 1 FROM test_runs"), timeout=15, what="the job to start")
    daemon.send(signal.SIGTERM)
    _, body = wait_for(
        lambda: (r := http_get(port, "/readyz", timeout=2)) and r[0] == 503 and r, timeout=10, what="503 on drain"
    )
    assert "stopping" in body
    assert http_get(port, "/healthz")[0] == 200
    assert daemon.wait(timeout=20) == 0


async def test_job_log_lines_carry_the_job_fields_as_json(db: Any, start_daemon: StartDaemon) -> None:
    daemon = start_daemon(daemon_config(processes=1, level="debug")).wait_ready()
    job_id = await Client(db).enqueue("sleeper", "0")
    await Client(db).wait(job_id, timeout=20)
    wait_for(lambda: any(e.get("event") == "job done" for e in daemon.events()), timeout=10, what="a job log line")
    line = next(e for e in daemon.events() if e.get("event") == "job done")
    assert line["entrypoint"] == "sleeper"
    assert line["job_id"] == job_id
    assert line["attempt"] == 1
    assert line["pid"] in daemon.worker_pids()
    assert isinstance(line["duration"], float)
    assert line["level"] == "debug"


def test_a_dsn_password_never_reaches_the_log(tmp_path: Path, pg_server: str) -> None:
    path = tmp_path / "queue.toml"
    path.write_text(daemon_config(processes=1))
    secret = "Sup3r-secret-pw"
    daemon = Daemon(path, f"postgresql://pgqd:{secret}@127.0.0.1:1/none").start()
    try:
        wait_for(lambda: daemon.has_event("waiting for the database"), timeout=20, what="the database wait")
    finally:
        daemon.send(signal.SIGTERM)
        assert daemon.wait(timeout=20) == 0
    log = daemon.log_text()
    assert secret not in log
    assert "postgresql://pgqd:***@127.0.0.1:1/none" in log


async def test_dashboard_snapshot_and_json(db: Any, db_dsn: str, start_daemon: StartDaemon) -> None:
    from tests.support.cli import run_pgqd

    start_daemon(daemon_config(processes=1)).wait_ready()
    client = Client(db)
    await client.enqueue_many([JobSpec("sleeper", "0") for _ in range(5)])
    await client.enqueue_many([JobSpec("unserved") for _ in range(2)])
    await wait_until(lambda: db.fetchval("SELECT count(*) = 5 FROM pgqd_log"), timeout=20, what="5 jobs")
    shown = run_pgqd("dashboard", "--once", "--dsn", db_dsn)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "Queues" in text
    assert "Throughput" in text
    assert "Workers" in text
    unserved = next(line for line in text.splitlines() if line.strip().startswith("unserved"))
    assert unserved.split()[1] == "2"
    as_json = json.loads(run_pgqd("dashboard", "--once", "--json", "--dsn", db_dsn).stdout)
    assert any(q["entrypoint"] == "unserved" and q["queued"] == 2 for q in as_json["queues"])
    assert sum(t["last_1m"] for t in as_json["throughput"] if t["entrypoint"] == "sleeper") == 5
    assert len(as_json["workers"]) == 1
