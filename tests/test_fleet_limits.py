"""Fleet-wide limits hold across real worker processes, each with its own connections to the database."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from benchmarks.limits_check import max_overlap
from pgqd import Client, JobSpec
from tests.support.handlers import RUNS_TABLE
from tests.support.processes import describe, engine_subprocesses
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

PROCESSES = 3


async def registered(conn: Any, count: int) -> None:
    """Waits until ``count`` workers have registered, so that the backlog meets a fleet that is up and idle."""

    async def all_up() -> bool:
        return bool(await conn.fetchval("SELECT count(*) = $1 FROM pgqd_workers", count))

    await wait_until(all_up, timeout=15, what=f"{count} registered workers")


async def test_concurrency_limit_holds_across_worker_processes(db_dsn: str, conn: Any, tmp_path: Path) -> None:
    await conn.execute(RUNS_TABLE)
    spec = {
        "entrypoints": [{"name": "limited", "handler": "timed_sleep", "concurrency_limit": 2}],
        # More local slots than the fleet-wide limit, so that only the limit can keep the fleet at two.
        "settings": {"concurrency": 4, "batch_size": 4, "poll_interval": 0.5},
    }

    async def all_logged() -> bool:
        return bool(await conn.fetchval("SELECT count(*) = 300 FROM pgqd_log"))

    async with engine_subprocesses(db_dsn, spec, PROCESSES, tmp_path) as workers:
        try:
            await registered(conn, PROCESSES)
            await Client(conn).enqueue_many([JobSpec("limited", {"sleep": 0.02}) for _ in range(300)])
            await wait_until(all_logged, timeout=30, what="300 jobs in the log")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{describe(workers)}") from None
        codes = [await worker.stop() for worker in workers]
    assert codes == [0] * PROCESSES, describe(workers)

    assert await conn.fetchval("SELECT count(*) FROM pgqd_log WHERE status = 'successful'") == 300
    assert await conn.fetchval("SELECT count(*) FROM pgqd_jobs") == 0
    runs = await conn.fetch("SELECT job_id, pid, started, ended FROM test_runs")
    assert len({run["job_id"] for run in runs}) == 300
    overlap = max_overlap([(run["started"], run["ended"]) for run in runs])
    assert overlap <= 2, "more jobs ran at once than the fleet-wide concurrency_limit of 2"
    assert overlap == 2, "the limit of 2 was never used in full"
    assert len({run["pid"] for run in runs}) > 1, "one process did all the work: the fleet was not tested"


async def test_rate_limit_holds_across_worker_processes(db_dsn: str, conn: Any, tmp_path: Path) -> None:
    window = 10.0
    rate, burst = 20.0, 20.0
    await conn.execute(RUNS_TABLE)
    spec = {
        "entrypoints": [{"name": "metered", "handler": "record_start", "rate_limit": [rate, 1.0]}],
        "settings": {"concurrency": 10, "batch_size": 10, "poll_interval": 0.5},
    }

    async def first_start() -> datetime | None:
        started: datetime | None = await conn.fetchval("SELECT min(started) FROM test_runs")
        return started

    def past(moment: datetime) -> Callable[[], Coroutine[Any, Any, bool]]:
        async def check() -> bool:
            return bool(await conn.fetchval("SELECT clock_timestamp() > $1", moment))

        return check

    async with engine_subprocesses(db_dsn, spec, PROCESSES, tmp_path) as workers:
        try:
            await registered(conn, PROCESSES)
            await Client(conn).enqueue_many([JobSpec("metered") for _ in range(1000)])
            first = await wait_until(first_start, timeout=15, what="the first job to start")
            assert first is not None
            end = first + timedelta(seconds=window)
            # A little past the window, so that every start inside it has been written.
            settled = end + timedelta(seconds=0.3)
            await wait_until(past(settled), timeout=window + 5, what="the end of the window", interval=0.1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{describe(workers)}") from None
        codes = [await worker.stop() for worker in workers]
    assert codes == [0] * PROCESSES, describe(workers)

    in_window = await conn.fetchval("SELECT count(*) FROM test_runs WHERE started < $1", end)
    assert in_window <= rate * window + burst
    assert in_window >= 180, "the workers fell far behind the rate they were allowed"
    pids = await conn.fetchval("SELECT count(DISTINCT pid) FROM test_runs")
    assert pids > 1, "one process did all the work: the fleet was not tested"
