"""The daemon's output stays one JSON object per line through database trouble: a PostgreSQL crash and a spell of
"too many connections". A private PostgreSQL is started for this, since it is crashed on purpose.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from pgqd import Client, JobSpec, install
from pgqd.daemon.embedded import EmbeddedServer
from pgqd.identifiers import Names
from pgqd.sql.grants import grant_statements
from tests.support.daemon import Daemon, daemon_config, wait_for
from tests.support.daemon_app import CREATE_RUNS
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

ROLE = "pgqd_daemon"
RETRYING = """
[entrypoints.sleeper.retry]
max_attempts = 10
initial = "100ms"
max = "1s"
"""


@pytest.fixture
async def private_server(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedServer, str]]:
    server = EmbeddedServer(tmp_path / "pgdata")
    dsn = server.start()
    try:
        yield server, dsn
    finally:
        server.stop()


def outages(daemon: Daemon) -> Counter[int]:
    return Counter(line["pid"] for line in daemon.json_lines() if line.get("event") == "database reachable again")


async def test_every_line_is_json_through_a_crash_and_a_connection_shortage(
    private_server: tuple[EmbeddedServer, str], tmp_path: Path
) -> None:
    server, dsn = private_server
    admin = await asyncpg.connect(dsn)
    await install(admin)
    await admin.execute(CREATE_RUNS)
    # The daemon runs as a role of its own, so that its connections can be refused while the test's are not.
    await admin.execute(f"CREATE ROLE {ROLE} LOGIN")
    await admin.execute("\n".join(grant_statements(Names(), None, ROLE)))
    daemon_dsn = dsn.replace("//postgres:@", f"//{ROLE}@", 1).replace("//postgres@", f"//{ROLE}@", 1)
    assert daemon_dsn != dsn, dsn

    config = tmp_path / "queue.toml"
    config.write_text(daemon_config(processes=2, worker_timeout="4s", extra=RETRYING))
    daemon = Daemon(config, daemon_dsn, {"PGQD_TEST_RECORD_DSN": dsn}).start()
    try:
        daemon.wait_ready()
        client = Client(admin)

        async def logged(count: int) -> bool:
            return bool(await admin.fetchval("SELECT count(*) >= $1 FROM pgqd_log", count))

        # A crash: every server process quits at once, and the start runs crash recovery.
        await client.enqueue_many([JobSpec("sleeper", "0.05") for _ in range(200)])
        await wait_until(lambda: logged(20), timeout=30, what="the first jobs to finish")
        await admin.close()
        server.restart(crash=True)
        admin = await asyncpg.connect(dsn)
        client = Client(admin)
        await wait_until(lambda: logged(200), timeout=60, what="every job after the crash")
        wait_for(lambda: outages(daemon), 20, "the end of the outage in the log")
        after_crash = outages(daemon)

        # A connection shortage: every new connection of the daemon's role is refused ("too many connections").
        await admin.execute(f"ALTER ROLE {ROLE} CONNECTION LIMIT 0")
        before = len(daemon.log_text())

        async def cut_off() -> bool:
            # Connections being opened while the limit changed may still get through: cut until none is left.
            return not await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = $1", ROLE
            )

        await wait_until(cut_off, timeout=20, what="the daemon's connections to be gone")
        await client.enqueue_many([JobSpec("sleeper", "0.05") for _ in range(100)])
        wait_for(lambda: "database unreachable" in daemon.log_text()[before:], 20, "the shortage in the log")
        wait_for(lambda: daemon.log_text()[before:].count("database unreachable") >= 2, 20, "both workers cut off")
        # Hold the shortage while the workers keep trying (every claim, heartbeat and flush opens a connection
        # and is refused): the repeats must not be logged.
        held_from = time.monotonic()
        wait_for(lambda: time.monotonic() - held_from > 3.5, 10, "the shortage to last")
        assert "database reachable again" not in daemon.log_text()[before:]
        await wait_until(cut_off, timeout=5, what="no connection of the daemon")
        await admin.execute(f"ALTER ROLE {ROLE} CONNECTION LIMIT -1")
        await wait_until(lambda: logged(300), timeout=60, what="every job after the shortage")
        wait_for(lambda: sum(outages(daemon).values()) > sum(after_crash.values()), 20, "the end of the shortage")
    finally:
        daemon.stop()

    lines = daemon.json_lines()
    statuses = {row[0]: row[1] for row in await admin.fetch("SELECT status::text, count(*) FROM pgqd_log GROUP BY 1")}
    assert statuses == {"successful": 300}
    assert await admin.fetchval("SELECT count(*) FROM pgqd_jobs") == 0
    await admin.close()

    # Each outage of each worker process: one line when it starts, one when it ends, with its duration.
    per_pid: dict[int, list[str]] = {}
    for line in lines:
        if line.get("event") in ("database unreachable", "database reachable again"):
            per_pid.setdefault(line["pid"], []).append(line["event"])
            if line["event"] == "database reachable again":
                assert float(line["outage_s"]) >= 0
    assert per_pid, "no outage was logged"
    for pid, events in per_pid.items():
        assert events == ["database unreachable", "database reachable again"] * (len(events) // 2), (pid, events)
    # asyncpg's own warnings, if any: routed through the same renderer, once per episode and process at most. (The
    # workers' pool is pgqd's own and reconnects only when a call needs a connection, so asyncpg's pool no longer
    # warns that it failed to restore one.)
    noise = Counter(line.get("pid") for line in lines if str(line.get("logger", "")).startswith("asyncpg"))
    for pid, count in noise.items():
        assert count <= len(per_pid.get(pid, [])) // 2, (pid, count, per_pid.get(pid))
    assert all("Traceback" not in str(line) for line in lines if str(line.get("logger", "")).startswith("asyncpg"))
