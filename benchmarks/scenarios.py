"""One run of each compare.py scenario for one system, each in a fresh database of its own.

Every function returns a flat dict of figures; compare.py takes medians over rounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks.common import concurrency_for, empty_database
from benchmarks.runners import ceiling_client
from benchmarks.systems import REPO, Mix, System, runner_env

ENQUEUE_BATCH = 1_000  # jobs per call in the batched-enqueue scenario and when filling a queue
FLOOD_BATCH = 100  # jobs per call of the flooding producer in the steady-state scenario
NOOP = ["noop"]  # the entrypoint whose jobs the scenarios count
POLL_MIN, POLL_MAX = 0.1, 1.0  # seconds between two counts of the finished jobs


async def settle(dsn: str) -> None:
    """Every drain starts from the same state: statistics fresh and a checkpoint just taken, so that one
    triggered by the set-up's WAL does not land in the middle of the measurement."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("VACUUM ANALYZE")
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def wait_until(conn: Any, sql: str, target: int, timeout: float, *args: Any) -> int:
    """Polls the count ``sql`` until it reaches ``target`` or ``timeout`` passes.

    The count reads a system's own log, so each poll costs more as the drain goes on: 10-17 ms for 100,000 jobs,
    which at ten polls a second took 5-9 % of this machine from the drain being measured, and more from a slower
    drain than a faster one. So it sleeps for half the time the progress so far says is left, between
    ``POLL_MIN`` and ``POLL_MAX``. The rates come from the tables' own times, not from when a poll saw the end."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    deadline = began + timeout
    while True:
        value = int(await conn.fetchval(sql, *args))
        now = loop.time()
        if value >= target or now > deadline:
            return value
        left = (target - value) * (now - began) / value if value > 0 else 0.0
        await asyncio.sleep(min(max(left / 2, POLL_MIN), POLL_MAX, deadline - now))


async def enqueue(system: System, server: str, jobs: int, single: int) -> dict[str, float]:
    async with empty_database(server) as dsn:
        await system.install(dsn)
        return await system.run(dsn, "enqueue", jobs=jobs, batch=ENQUEUE_BATCH, single=single)


async def drain(
    system: System, server: str, jobs: int, processes: int, batch: int, concurrency: int, cap: float
) -> dict[str, float]:
    """Drains ``jobs`` pre-queued no-op jobs; stops after ``cap`` seconds if they are not all done, and then
    rates what finished. Rate = finished / (last finish - first start), from the system's own tables."""
    result, _ = await drain_of(system, server, {"noop": jobs}, NOOP, processes, batch, concurrency, cap)
    return result


async def drain_of(
    system: System,
    server: str,
    counts: dict[str, int],
    measured: list[str],
    processes: int,
    batch: int,
    concurrency: int,
    cap: float,
    mix: Mix | None = None,
    env: dict[str, str] | None = None,
) -> tuple[dict[str, float], tuple[float, float]]:
    """Drains the pre-queued jobs of ``counts`` (entrypoint -> jobs) with the entrypoints of ``mix`` served, until
    the jobs of the ``measured`` entrypoints are done or ``cap`` seconds have passed; rates those jobs alone. Also
    returns the span rated: the first start and the last end of a measured job (Unix seconds, the database's
    clock)."""
    wanted = sum(counts[name] for name in measured)
    async with empty_database(server) as dsn:
        await system.install(dsn)
        await system.run(dsn, "fill_mix", counts=counts, batch=ENQUEUE_BATCH)
        await settle(dsn)
        conn = await asyncpg.connect(dsn)
        try:
            async with system.consumer(dsn, processes, batch, concurrency, env or {}, mix):
                await wait_until(conn, system.tables.finished, wanted, cap, measured)
            finished, first_start, last_finish = await conn.fetchrow(system.tables.span, measured)
        finally:
            await conn.close()
    if finished < 2:
        raise RuntimeError(f"{system.label} finished {finished} of {wanted} jobs within {cap}s")
    rate = finished / (last_finish - first_start).total_seconds()
    return {"jobs_per_s": rate, "finished": finished}, (first_start.timestamp(), last_finish.timestamp())


async def ceiling(server: str, jobs: int, processes: int, batch: int) -> dict[str, float]:
    """The plain-SQL loop of benchmarks/runners/ceiling_client.py in ``processes`` client processes."""
    async with empty_database(server) as dsn:
        await ceiling_client.create(dsn, jobs)
        await settle(dsn)
        in_flight = concurrency_for(batch)
        request = json.dumps({"dsn": dsn, "batch": batch, "in_flight": in_flight, "start_at": time.time() + 2.0})
        command = [sys.executable, "-m", "benchmarks.runners.ceiling_client", request]
        clients = [
            await asyncio.create_subprocess_exec(*command, cwd=REPO, env=runner_env(dsn), stdout=subprocess.PIPE)
            for _ in range(processes)
        ]
        outputs = [json.loads((await client.communicate())[0]) for client in clients]
    if any(client.returncode for client in clients):
        raise RuntimeError("a ceiling client failed")
    finished = sum(o["jobs"] for o in outputs)
    span = max(o["last_finish"] for o in outputs) - min(o["first_start"] for o in outputs)
    return {"jobs_per_s": finished / span, "finished": finished}


async def steady(system: System, server: str, seconds: float, processes: int, batch: int) -> dict[str, float]:
    """Completed jobs per second while one producer enqueues as fast as it can (batches of 100)."""
    async with empty_database(server) as dsn:
        await system.install(dsn)
        conn = await asyncpg.connect(dsn)
        try:
            async with system.consumer(dsn, processes, batch, concurrency_for(batch), {}):
                await system.run(dsn, "fill", jobs=1, batch=1)  # the consumer has picked up and finished a job
                if await wait_until(conn, system.tables.finished, 1, 30, NOOP) < 1:
                    raise RuntimeError(f"{system.label} did not run the warm-up job")
                window = await system.run(dsn, "flood", seconds=seconds, batch=FLOOD_BATCH)
                done = await conn.fetchval(system.tables.completed_between, window["started"], window["ended"])
                backlog = await conn.fetchval(system.tables.backlog)
        finally:
            await conn.close()
    span = window["ended"] - window["started"]
    return {"completed_per_s": done / span, "enqueued_per_s": window["sent"] / span, "backlog": backlog}


def read_stamps(path: Path) -> dict[int, float]:
    if not path.exists():
        return {}
    pairs = (line.split() for line in path.read_text().splitlines() if line.strip())
    return {int(sequence): float(at) for sequence, at in pairs}


async def latency(system: System, server: str, jobs: int, spacing: float, batch: int) -> dict[str, float]:
    """Enqueue call -> handler start for single jobs ``spacing`` apart, with one idle consumer process."""
    with tempfile.TemporaryDirectory() as folder:
        stamps = Path(folder) / "stamps"
        async with empty_database(server) as dsn:
            await system.install(dsn)
            env = {"BENCH_STAMPS": str(stamps)}
            async with system.consumer(dsn, 1, batch, concurrency_for(batch), env):
                await system.run(dsn, "one", entrypoint="stamp", sequence=-1)
                await wait_for_stamps(system, stamps, [-1])  # warm-up: the consumer is up and listening
                sent = (await system.run(dsn, "trickle", jobs=jobs, spacing=spacing))["sent"]
                started = await wait_for_stamps(system, stamps, list(range(jobs)))
    delays = sorted((started[int(seq)] - at) * 1000 for seq, at in sent.items())
    return {"p50_ms": percentile(delays, 0.50), "p99_ms": percentile(delays, 0.99), "max_ms": delays[-1]}


async def wait_for_stamps(system: System, path: Path, sequences: list[int]) -> dict[int, float]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not set(sequences) <= set(stamps := read_stamps(path)):
        if loop.time() > deadline:
            raise TimeoutError(f"{system.label}: {len(set(sequences) - set(stamps))} latency jobs did not start")
        await asyncio.sleep(0.05)
    return stamps


def percentile(ordered: list[float], share: float) -> float:
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]
