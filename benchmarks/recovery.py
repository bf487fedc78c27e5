"""Recovery after a worker dies, in the real daemon: how soon a killed worker's jobs run again, what killing the
worker of a suspect does to it, and what a poison job costs.

    .venv/bin/python -m benchmarks.recovery [--seconds 1 3 10] [--rounds 3] [--jobs 60] [--json]

Each round starts a daemon (2 worker processes, concurrency 32) on a fresh database of the test server
($PGQD_TEST_DSN, else 127.0.0.1:5432), fills both workers with jobs that each sleep the given length, SIGKILLs
the worker that holds more of them, and times, for the jobs it held: the kill until the supervisor's rescue put
them back (detection), until each started again, and until the last one finished. Recovery is healthy when the
last one finishes about one job length after detection: they all run again at once, in parallel.

Then: a job made a suspect by two kills is run alone, and the worker running it is killed too (with the default
max_worker_deaths of 3 it must still end successful); and a poison job (it ends its process on every run) among
ordinary ones at concurrency 32, whose deaths and runs are counted (the bound is 2 + max_worker_deaths).
The tests run the same drills at a small scale (tests/test_recovery.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks.common import fresh_database, run_until_signalled
from pgqd import Client, JobSpec
from tests.support.daemon import Daemon, daemon_config
from tests.support.daemon_app import CREATE_RUNS
from tests.support.databases import LOCAL_SERVER
from tests.support.waiting import wait_until

POISON = """
[entrypoints.poison]
handler = "tests.support.daemon_app:kills_its_process"
"""


def recovery_config(concurrency: int = 32, extra: str = "") -> str:
    """Two worker processes with room for many jobs each; the stale-heartbeat rescue far away (60 s), so what
    is measured is the supervisor's rescue."""
    config = daemon_config(processes=2, worker_timeout="60s", extra=extra)
    return config.replace("concurrency = 10", f"concurrency = {concurrency}")


@dataclass
class KillReport:
    job_seconds: float
    jobs_held: int
    detected_s: float  # the kill until the rescue had put the jobs back
    restarted_median_s: float  # the kill until each job started again
    restarted_max_s: float
    recovered_s: float  # the kill until the last of them finished
    given_up: int


async def kill_a_busy_worker(db: Any, daemon: Daemon, jobs: int, seconds: float) -> KillReport:
    """Fills both workers with ``jobs`` jobs of ``seconds`` each and SIGKILLs the one holding more of them."""
    client = Client(db)
    ids = [i for i in await client.enqueue_many([JobSpec("sleeper", str(seconds)) for _ in range(jobs)]) if i]

    async def all_running() -> list[Any] | None:
        rows = await db.fetch("SELECT job_id, pid FROM test_runs WHERE job_id = ANY($1::bigint[])", ids)
        return rows if len(rows) == len(ids) else None

    rows = await wait_until(all_running, timeout=30, what="every job to start")
    by_pid: dict[int, list[int]] = {}
    for row in rows:
        by_pid.setdefault(row["pid"], []).append(row["job_id"])
    victim, held = max(by_pid.items(), key=lambda item: len(item[1]))
    killed_at = await db.fetchval("SELECT clock_timestamp()")
    os.kill(victim, signal.SIGKILL)

    async def rescued() -> bool:
        return bool(
            await db.fetchval(
                "SELECT count(*) = 0 FROM pgqd_jobs WHERE worker_id IS NOT NULL AND "
                "status = 'picked' AND id = ANY($1::bigint[]) AND picked_at < $2",
                held,
                killed_at,
            )
        )

    await wait_until(rescued, timeout=60, what="the rescue")
    detected_at = await db.fetchval("SELECT clock_timestamp()")

    async def all_finished() -> bool:
        return bool(
            await db.fetchval("SELECT count(*) = $2 FROM pgqd_log WHERE job_id = ANY($1::bigint[])", held, len(held))
        )

    await wait_until(all_finished, timeout=60 + len(held) * seconds, what="the killed worker's jobs to finish")
    restarts = await db.fetch(
        "SELECT extract(epoch FROM min(started) - $2)::float8 AS s FROM test_runs"
        " WHERE job_id = ANY($1::bigint[]) AND pid <> $3 GROUP BY job_id",
        held,
        killed_at,
        victim,
    )
    finished = await db.fetchval(
        "SELECT extract(epoch FROM max(finished_at) - $2)::float8 FROM pgqd_log WHERE job_id = ANY($1::bigint[])",
        held,
        killed_at,
    )
    given_up = await db.fetchval(
        "SELECT count(*) FROM pgqd_log WHERE job_id = ANY($1::bigint[]) AND status <> 'successful'", held
    )
    starts = [row["s"] for row in restarts]
    return KillReport(
        job_seconds=seconds,
        jobs_held=len(held),
        detected_s=round((detected_at - killed_at).total_seconds(), 3),
        restarted_median_s=round(statistics.median(starts), 3),
        restarted_max_s=round(max(starts), 3),
        recovered_s=round(finished, 3),
        given_up=given_up,
    )


async def run_of(db: Any, job_id: int, runs: int) -> Any:
    """The ``runs``-th recorded run of a job, once it has started."""

    async def started() -> Any:
        rows = await db.fetch("SELECT pid, started FROM test_runs WHERE job_id = $1 ORDER BY started", job_id)
        return rows[runs - 1] if len(rows) >= runs else None

    return await wait_until(started, timeout=60, what=f"run {runs} of job {job_id}")


@dataclass
class SuspectReport:
    status: str
    runs: int
    deaths: int
    last_error: str | None
    ran_alone: bool


async def kill_a_suspects_worker(db: Any, seconds: float = 3.0) -> SuspectReport:
    """Kills the worker of one job twice (it becomes a suspect), then the worker running it alone."""
    client = Client(db)
    job_id = await client.enqueue("sleeper", str(seconds))
    for run in (1, 2, 3):
        row = await run_of(db, job_id, run)
        if run == 3:
            # The third run is the suspect's, alone in its process.
            await wait_until(
                lambda: db.fetchval("SELECT isolated FROM pgqd_jobs WHERE id = $1", job_id),
                timeout=10,
                what="the lone run",
            )
        os.kill(row["pid"], signal.SIGKILL)
    state = await client.wait(job_id, timeout=60 + 2 * seconds)
    runs = await db.fetch("SELECT job_id, pid, started, ended FROM test_runs ORDER BY started")
    mine = [r for r in runs if r["job_id"] == job_id]
    last = mine[-1]
    alone = not any(
        r["job_id"] != job_id
        and r["pid"] == last["pid"]
        and r["started"] < last["ended"]
        and (r["ended"] is None or r["ended"] > last["started"])
        for r in runs
    )
    error = await db.fetchval("SELECT error_message FROM pgqd_log WHERE job_id = $1", job_id)
    return SuspectReport(state.status, len(mine), 3, error, alone)


@dataclass
class PoisonReport:
    ordinary: int
    status: str
    error: str | None
    poison_runs: int
    workers_died: int
    bystanders_not_successful: int
    bystanders_run_more_than_once: int
    daemon_alive: bool


async def poison_among_ordinary_jobs(db: Any, daemon: Daemon, ordinary: int) -> PoisonReport:
    client = Client(db)
    jobs = [JobSpec("sleeper", "0.05") for _ in range(ordinary)]
    jobs.insert(ordinary // 4, JobSpec("poison"))
    ids = [i for i in await client.enqueue_many(jobs) if i]
    poison_id = ids.pop(ordinary // 4)
    await wait_until(
        lambda: db.fetchval("SELECT count(*) = $1 FROM pgqd_log", ordinary + 1), timeout=300, what="every job to end"
    )
    row = await db.fetchrow("SELECT status::text, error_message FROM pgqd_log WHERE job_id = $1", poison_id)
    runs = await db.fetchval("SELECT count(*) FROM test_runs WHERE job_id = $1", poison_id)
    not_ok = await db.fetchval(
        "SELECT count(*) FROM pgqd_log WHERE job_id = ANY($1::bigint[]) AND status <> 'successful'", ids
    )
    twice = await db.fetchval(
        "SELECT count(*) FROM (SELECT job_id FROM test_runs WHERE job_id = ANY($1::bigint[])"
        " GROUP BY job_id HAVING count(*) > 1) AS t",
        ids,
    )
    died = sum(1 for e in daemon.events() if e.get("event") == "worker died")
    assert daemon.process is not None
    return PoisonReport(
        ordinary, row["status"], row["error_message"], runs, died, not_ok, twice, daemon.process.poll() is None
    )


@contextlib.asynccontextmanager
async def daemon_on(server: str, folder: Path, config: str) -> AsyncIterator[tuple[Any, Daemon]]:
    async with fresh_database(server) as dsn:
        path = folder / f"recovery-{uuid.uuid4().hex[:6]}.toml"
        path.write_text(config)
        daemon = Daemon(path, dsn).start().wait_ready()
        db = await asyncpg.connect(dsn)
        await db.execute(CREATE_RUNS)
        try:
            yield db, daemon
        finally:
            await db.close()
            daemon.stop()


async def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    server = os.environ.get("PGQD_TEST_DSN") or LOCAL_SERVER
    kills: list[KillReport] = []
    for seconds in args.seconds:
        for _ in range(args.rounds):
            async with daemon_on(server, folder, recovery_config()) as (db, daemon):
                kills.append(await kill_a_busy_worker(db, daemon, args.jobs, seconds))
            print(json.dumps(asdict(kills[-1])), file=sys.stderr)
    async with daemon_on(server, folder, recovery_config()) as (db, _):
        suspect = await kill_a_suspects_worker(db)
    async with daemon_on(server, folder, recovery_config(extra=POISON)) as (db, daemon):
        poison = await poison_among_ordinary_jobs(db, daemon, args.poison_ordinary)
    summary = {}
    for seconds in args.seconds:
        mine = [k for k in kills if k.job_seconds == seconds]
        summary[str(seconds)] = {
            "jobs_held_median": statistics.median(k.jobs_held for k in mine),
            "detected_median_s": statistics.median(k.detected_s for k in mine),
            "recovered_median_s": statistics.median(k.recovered_s for k in mine),
            "recovered_max_s": max(k.recovered_s for k in mine),
            "given_up": sum(k.given_up for k in mine),
        }
    return {
        "command": "python -m benchmarks.recovery " + " ".join(sys.argv[1:]),
        "kills": [asdict(k) for k in kills],
        "recovery_by_job_length": summary,
        "suspect_worker_killed": asdict(suspect),
        "poison": asdict(poison),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, nargs="+", default=[1.0, 3.0, 10.0], help="job lengths")
    parser.add_argument("--rounds", type=int, default=3, help="kills per job length (default 3)")
    parser.add_argument("--jobs", type=int, default=60, help="jobs spread over the two workers (default 60)")
    parser.add_argument("--poison-ordinary", type=int, default=3000, help="ordinary jobs around the poison")
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pgqd-recovery-") as folder:
        result = run_until_signalled(run(args, Path(folder)))
    print(json.dumps(result, indent=None if args.json else 2, default=str))


if __name__ == "__main__":
    main()
