"""A database failover or a network partition: connections that stay open but never answer again.

The daemon talks to PostgreSQL through a TCP proxy that can black-hole the connections it holds (a failover: the
old primary's address is gone, new connections reach the new primary) or freeze everything (a partition). The
handlers record their runs on a direct connection, so the only thing cut is pgqd's own connections.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from pgqd import Client, JobSpec
from pgqd.backend.bounded import DatabaseTimeouts
from tests.support.daemon import Daemon, StartDaemon, daemon_config, wait_for
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

WORKER_TIMEOUT = 8.0
# What the daemon derives from worker_timeout when [database] command_timeout is not set.
COMMAND_TIMEOUT = DatabaseTimeouts.derive(WORKER_TIMEOUT).command
JOBS = 600


@pytest.fixture
def proxy(db_dsn: str) -> Iterator[TcpProxy]:
    with TcpProxy.for_dsn(db_dsn) as started:
        yield started


def start_through(start_daemon: StartDaemon, proxy: TcpProxy, db_dsn: str, worker_timeout: float) -> Daemon:
    config = daemon_config(processes=2, worker_timeout=f"{worker_timeout:g}s")
    daemon = start_daemon(config, env={"PGQD_TEST_RECORD_DSN": db_dsn}, dsn=proxy.route(db_dsn))
    return daemon.wait_ready()


def events_named(daemon: Daemon, name: str) -> list[dict[str, Any]]:
    return [line for line in daemon.json_lines() if line.get("event") == name]


async def test_a_failover_mid_drain_resumes_within_the_bound_and_loses_no_job(
    db: Any, db_dsn: str, proxy: TcpProxy, start_daemon: StartDaemon
) -> None:
    daemon = start_through(start_daemon, proxy, db_dsn, WORKER_TIMEOUT)
    workers = sorted(daemon.worker_pids())
    await Client(db).enqueue_many([JobSpec("sleeper", "0.05") for _ in range(JOBS)])

    async def runs_at_least(count: int) -> bool:
        return bool(await db.fetchval("SELECT count(*) >= $1 FROM test_runs", count))

    await wait_until(lambda: runs_at_least(JOBS // 5), timeout=30, what="the drain to be under way")
    cut = proxy.blackhole_open()
    failed_over_at: datetime = await db.fetchval("SELECT clock_timestamp()")
    assert cut >= 4, "the daemon's connections should have gone through the proxy"

    async def all_logged() -> bool:
        return bool(await db.fetchval("SELECT count(*) = $1 FROM pgqd_log", JOBS))

    await wait_until(all_logged, timeout=WORKER_TIMEOUT + 60, what="every job in the log after the failover")

    # Jobs claimed before the cut had started within milliseconds (each runs 50 ms): a run that starts later
    # comes from a claim made on a new connection.
    resumed_after = await db.fetchval(
        "SELECT extract(epoch FROM min(started) - $1) FROM test_runs WHERE started > $1 + interval '0.5 s'",
        failed_over_at,
    )
    assert resumed_after is not None
    assert float(resumed_after) <= WORKER_TIMEOUT + 5, f"the daemon resumed {float(resumed_after):.1f}s after the cut"
    print(f"failover to first job running again: {float(resumed_after):.2f}s (command timeout {COMMAND_TIMEOUT:g}s)")

    statuses = {row[0]: row[1] for row in await db.fetch("SELECT status::text, count(*) FROM pgqd_log GROUP BY 1")}
    assert statuses == {"successful": JOBS}
    assert await db.fetchval("SELECT count(*) FROM pgqd_jobs") == 0, "no job may be left queued or picked"
    # The same worker processes recovered on new connections: none was replaced.
    assert sorted(daemon.worker_pids()) == workers
    assert events_named(daemon, "database unreachable"), "the outage should have been logged"
    wait_for(lambda: events_named(daemon, "database reachable again"), 10, "the end of the outage in the log")


async def test_a_partition_longer_than_the_command_timeout_logs_its_start_and_end(
    db: Any, db_dsn: str, proxy: TcpProxy, start_daemon: StartDaemon
) -> None:
    worker_timeout = 4.0
    command_timeout = DatabaseTimeouts.derive(worker_timeout).command
    daemon = start_through(start_daemon, proxy, db_dsn, worker_timeout)
    client = Client(db)
    first = await client.enqueue("sleeper", "0")
    assert first is not None
    assert (await client.wait(first, timeout=20)).status == "successful"

    proxy.freeze()
    wait_for(lambda: events_named(daemon, "database unreachable"), command_timeout + 15, "the outage to be logged")
    # Hold the partition a while longer than one command timeout: the calls made meanwhile fail too.
    unreachable_since = datetime.now()
    wait_for(lambda: (datetime.now() - unreachable_since).total_seconds() > command_timeout + 2, 10, "the partition")
    proxy.thaw()

    def outages_by_pid() -> dict[int, list[str]]:
        per_pid: dict[int, list[str]] = {}
        for line in daemon.json_lines():
            if line.get("event") in ("database unreachable", "database reachable again"):
                per_pid.setdefault(line["pid"], []).append(line["event"])
        return per_pid

    def every_outage_ended() -> bool:
        per_pid = outages_by_pid()
        return bool(per_pid) and all(events[-1] == "database reachable again" for events in per_pid.values())

    wait_for(every_outage_ended, 30, "the end of every outage in the log")
    ended = events_named(daemon, "database reachable again")
    assert all(float(line["outage_s"]) >= command_timeout for line in ended), ended
    assert all("error" in line for line in events_named(daemon, "database unreachable"))
    # One line when an outage starts and one when it ends, per worker process, not one per failed call. (A
    # call sent just before the thaw may still time out just after it: a second, short outage.)
    for pid, events in outages_by_pid().items():
        episodes = len(events) // 2
        assert 1 <= episodes <= 2, (pid, events)
        assert events == ["database unreachable", "database reachable again"] * episodes, (pid, events)

    after = await client.enqueue("sleeper", "0")
    assert after is not None
    assert (await client.wait(after, timeout=30)).status == "successful"
    daemon.json_lines()
