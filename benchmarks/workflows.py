"""Workflows through the real daemon: pg-boss's dependency patterns, each of 10,000 no-op jobs, against a
baseline of 10,000 independent jobs measured in the same round.

    .venv/bin/python -m benchmarks.workflows [--rounds 3] [--jobs 10000] [--waiting 1000000] [--json]

Patterns: baseline (no dependencies); fan-out (1 -> 9,999); fan-in (9,999 -> 1); chain (10,000 in sequence);
layered (20 layers, each job waiting for 3 jobs of the layer before). Each run enqueues the whole pattern in one
call (``Client.enqueue_workflow``) on a fresh database, then starts the daemon in its default configuration with
2 worker processes and waits for every job to end. Throughput is jobs divided by the time from the first job's
start to the last job's end, as the log records them. The patterns are interleaved, in a new order each round,
each between two baselines, and each is reported as the median of its ratios to the mean of the two baselines
around it, with the load average.

For the chain, the per-link delay is each job's start minus its parent's end (p50/p99 over the 9,999 links),
beside the median time of a durable one-row commit on the same server (the floor under each link).

``--waiting N`` adds a run of the baseline with N jobs waiting (on a parent that never ends) in the same table.
``--claim-cost N`` instead times the claim alone: two databases with a deep queue of ready jobs, one of them with
N jobs of the same entrypoint waiting, and blocks of claims of 10 (the worker's own ``PostgresBackend.claim``)
alternating between the two; it prints the median time per claim of each.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import asyncpg

from benchmarks.common import environment, fresh_database, parser, report, run_until_signalled
from benchmarks.daemon import running_daemon
from pgqd import Client, PostgresBackend, Workflow
from pgqd.models import EntrypointLimit, WorkerInfo

BATCH = 10  # pgqd's default batch_size


def baseline(jobs: int) -> Workflow:
    wf = Workflow("baseline")
    wf.group(*(["noop"] * jobs))
    return wf


def fan_out(jobs: int) -> Workflow:
    wf = Workflow("fan-out")
    root = wf.add("noop")
    wf.group(*(["noop"] * (jobs - 1)), after=root)
    return wf


def fan_in(jobs: int) -> Workflow:
    wf = Workflow("fan-in")
    wf.chord(["noop"] * (jobs - 1), "noop")
    return wf


def chain(jobs: int) -> Workflow:
    wf = Workflow("chain")
    wf.chain(*(["noop"] * jobs))
    return wf


def layered(jobs: int, layers: int = 20, parents: int = 3) -> Workflow:
    wf = Workflow("layered")
    width = jobs // layers
    layer = wf.group(*(["noop"] * width))
    for _ in range(layers - 1):
        layer = [wf.add("noop", after=[layer[(n + k) % width] for k in range(parents)]) for n in range(width)]
    return wf


PATTERNS: dict[str, Callable[[int], Workflow]] = {
    "baseline": baseline,
    "fan-out": fan_out,
    "fan-in": fan_in,
    "chain": chain,
    "layered": layered,
}


async def add_waiting(dsn: str, count: int) -> None:
    """``count`` jobs of the measured entrypoint waiting for a parent that never ends."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO pgqd_jobs (entrypoint, status, waiting_on)"
            " SELECT 'noop', 'waiting', 1 FROM generate_series(1, $1)",
            count,
        )
        await conn.execute("VACUUM ANALYZE pgqd_jobs")
    finally:
        await conn.close()


async def run_pattern(server: str, name: str, jobs: int, waiting: int = 0, processes: int = 2) -> dict[str, Any]:
    async with fresh_database(server) as dsn:
        if waiting:
            await add_waiting(dsn, waiting)
        conn = await asyncpg.connect(dsn)
        try:
            workflow = PATTERNS[name](jobs)
            started = time.perf_counter()
            run = await Client(conn).enqueue_workflow(workflow)
            enqueue_s = time.perf_counter() - started
            await conn.execute("VACUUM ANALYZE pgqd_jobs")
            # Every run starts right after a checkpoint, as benchmarks/drain.py's do: the WAL of the set-up (a
            # million rows with --waiting) must not bring one into the middle of the run.
            await conn.execute("CHECKPOINT")
            async with running_daemon(dsn, processes, BATCH):
                deadline = time.monotonic() + 900
                while await conn.fetchval("SELECT count(*) FROM pgqd_log") < jobs:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{name}: not every job ended within 900 s")
                    await asyncio.sleep(0.1)
            row = await conn.fetchrow(
                """SELECT count(*) FILTER (WHERE status = 'successful') AS ok,
                          extract(epoch FROM max(finished_at) - min(started_at)) AS span FROM pgqd_log"""
            )
            result: dict[str, Any] = {
                "pattern": name + (f"+{waiting} waiting" if waiting else ""),
                "jobs_per_s": round(jobs / float(row["span"])),
                "successful": row["ok"],
                "enqueue_ms": round(enqueue_s * 1000),
                "load": round(os.getloadavg()[0], 1),
            }
            if name == "chain":
                result["commit_p50_ms"] = await commit_latency(conn)
                delays = await link_delays(conn, run.ids)
                result["link_p50_ms"] = round(statistics.median(delays), 2)
                result["link_p99_ms"] = round(statistics.quantiles(delays, n=100)[98], 2)
            return result
        finally:
            await conn.close()


async def commit_latency(conn: Any, commits: int = 200) -> float:
    """The median time of a one-row insert that waits for its WAL to reach the disk, as an outcome flush does:
    the floor under each link of a chain on this machine (in milliseconds)."""
    await conn.execute("CREATE TABLE IF NOT EXISTS commit_probe_durable (x integer)")
    times = []
    for _ in range(commits):
        started = time.perf_counter()
        await conn.execute("INSERT INTO commit_probe_durable VALUES (1)")
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2)


async def link_delays(conn: Any, ids: list[int]) -> list[float]:
    """Each job's start minus its parent's end, in milliseconds."""
    rows = await conn.fetch(
        """SELECT extract(epoch FROM c.started_at - p.finished_at) * 1000 AS ms
           FROM pgqd_job_edges AS e
           JOIN pgqd_log AS p ON p.job_id = e.parent_id JOIN pgqd_log AS c ON c.job_id = e.child_id
           WHERE e.child_id = ANY ($1::bigint[])""",
        ids,
    )
    return [float(r["ms"]) for r in rows]


async def claim_cost(server: str, waiting: int, rounds: int = 6, claims: int = 400) -> list[dict[str, Any]]:
    async with fresh_database(server) as plain, fresh_database(server) as crowded:
        backends = {}
        for label, dsn in (("no jobs waiting", plain), (f"{waiting} jobs waiting", crowded)):
            if dsn == crowded:
                await add_waiting(dsn, waiting)
            conn = await asyncpg.connect(dsn)
            await conn.execute(
                "INSERT INTO pgqd_jobs (entrypoint) SELECT 'noop' FROM generate_series(1, $1)", rounds * claims * 10
            )
            await conn.execute("VACUUM ANALYZE pgqd_jobs")
            await conn.execute("CHECKPOINT")
            backend = PostgresBackend(conn)
            backends[label] = (conn, backend, await backend.register_worker(WorkerInfo("bench", os.getpid(), ["noop"])))
        times: dict[str, list[float]] = {label: [] for label in backends}
        limits = [EntrypointLimit("noop")]
        for round_number in range(rounds):
            for label in list(backends)[:: 1 if round_number % 2 else -1]:
                _, backend, worker = backends[label]
                started = time.perf_counter()
                for _ in range(claims):
                    if len((await backend.claim(worker, 10, limits)).jobs) != 10:
                        raise RuntimeError("the queue ran dry")
                times[label].append((time.perf_counter() - started) / claims * 1000)
        for conn, _, _ in backends.values():
            await conn.close()
    return [
        {"table": label, "claim_ms_median": round(statistics.median(t), 3), "rounds": [round(x, 3) for x in t],
         "load": round(os.getloadavg()[0], 1)}
        for label, t in times.items()
    ]  # fmt: skip


async def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--waiting", type=int, default=0, help="also run the baseline with this many waiting jobs")
    p.add_argument("--patterns", nargs="+", default=list(PATTERNS), choices=list(PATTERNS))
    p.add_argument("--processes", type=int, default=2, help="worker processes of the daemon (default 2)")
    p.add_argument("--claim-cost", type=int, default=0, metavar="N", help="time the claim with N waiting jobs")
    args = p.parse_args()
    if args.claim_cost:
        results = await claim_cost(args.server, args.claim_cost)
        report("claim with jobs waiting", results, await environment(args.server), args.json)
        return
    runs: list[dict[str, Any]] = []
    for round_number in range(args.rounds):
        order: list[tuple[str, int]] = [(name, 0) for name in args.patterns if name != "baseline"]
        if args.waiting:
            order.append(("baseline", args.waiting))
        random.shuffle(order)
        # Every pattern sits between two baselines, and is compared with their mean: on a shared machine the
        # load drifts within minutes, so a baseline measured far from the pattern says little about it.
        before = await run_pattern(args.server, "baseline", args.jobs, processes=args.processes)
        measured = [before]
        for name, waiting in order:
            result = await run_pattern(args.server, name, args.jobs, waiting, processes=args.processes)
            after = await run_pattern(args.server, "baseline", args.jobs, processes=args.processes)
            result["ratio"] = round(
                result["jobs_per_s"] / statistics.mean([before["jobs_per_s"], after["jobs_per_s"]]), 3
            )
            measured += [result, after]
            before = after
        baselines = [r for r in measured if r["pattern"] == "baseline"]
        for r in baselines:
            r["ratio"] = round(r["jobs_per_s"] / statistics.mean(b["jobs_per_s"] for b in baselines), 3)
        for r in measured:
            r["round"] = round_number + 1
            if not args.json:
                print(r, flush=True)
        runs.extend(measured)
    summary = []
    for name in dict.fromkeys(r["pattern"] for r in runs):
        mine = [r for r in runs if r["pattern"] == name]
        row: dict[str, Any] = {
            "pattern": name,
            "jobs_per_s": round(statistics.median(r["jobs_per_s"] for r in mine)),
            "ratio_to_baseline": round(statistics.median(r["ratio"] for r in mine), 3),
            "load": [r["load"] for r in mine],
        }
        if name == "chain":
            row["link_p50_ms"] = round(statistics.median(r["link_p50_ms"] for r in mine), 2)
            row["link_p99_ms"] = round(statistics.median(r["link_p99_ms"] for r in mine), 2)
            row["commit_p50_ms"] = round(statistics.median(r["commit_p50_ms"] for r in mine), 2)
        summary.append(row)
    env = await environment(args.server)
    env["runs"] = runs
    report("workflows", summary, env, args.json)


if __name__ == "__main__":
    run_until_signalled(main())
