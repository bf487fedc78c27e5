"""What the jobs claimed since the last vacuum cost every later claim of a deep queue.

    .venv/bin/python -m benchmarks.ready_head [--jobs 2000000] [--steps 5000 20000 40000 80000]

A claimed job leaves its entry at the head of the ready index, where each later claim of its entrypoint steps over
it until VACUUM removes it. In a fresh database with ``--jobs`` queued no-op jobs, this claims and finishes jobs
with the claim function itself (claims of 10, then one DELETE standing for their outcomes) up to each of
``--steps`` jobs since the last vacuum, and after each step reports:

- the median server time of ``--probe-claims`` more claims of 10, each in its own transaction (``EXPLAIN
  ANALYZE`` of the call: no round trip counted), half of them reading the ready jobs from the start, half from the
  first queued job, as a worker's claim does that starts where its last one did (migration 0017);
- the buffers and time of the plain ten-row read of the ready index (``EXPLAIN (ANALYZE, BUFFERS)``, best of 5);
- the same read as the claim makes it (``FOR UPDATE SKIP LOCKED``), whole and from the first queued job (medians of
  20, rolled back).

Then it vacuums and reports them all once more, with the vacuum's length. The soak's deep backlog is this at scale: a
vacuum every few seconds at most (``MAX_TIME_SHARE`` in pgqd/daemon/worker/vacuum.py), tens of thousands of jobs
claimed in between (docs/performance.md). JSON to ``--output`` when given.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks.common import DEFAULT_SERVER, fresh_database, run_until_signalled
from benchmarks.drain import fill

BATCH = 10
WORKER_ID = 1  # claims need a worker id; nothing checks it against the workers table
READY_READ = """EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, FORMAT JSON)
SELECT id FROM pgqd_jobs WHERE entrypoint = 'noop' AND status = 'queued' ORDER BY priority DESC, id LIMIT 10"""
# The claim's own scan of the ready index, alone, and the same scan from a start: the first queued job's position,
# as a worker knows it from its last claim. The entries before it are claimed jobs.
LOCKING_READ = """EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, FORMAT JSON)
SELECT j.ctid FROM pgqd_jobs AS j WHERE j.entrypoint = 'noop' AND j.status = 'queued' {start}
ORDER BY j.priority DESC, j.id LIMIT 10 FOR UPDATE SKIP LOCKED"""
FROM_START = "AND j.priority <= 0 AND j.priority >= 0 AND j.id >= $1"
FIRST_QUEUED = "SELECT min(id) FROM pgqd_jobs WHERE status = 'queued'"
CLAIM = "SELECT count(*) FROM pgqd_claim_jobs($1, $2, ARRAY['noop'], ARRAY[0], ARRAY[0.0], ARRAY[0.0])"
# EXPLAIN ANALYZE runs the claim (it takes its jobs) and reports the server's time alone.
TIMED_CLAIM = "EXPLAIN (ANALYZE, FORMAT JSON) " + CLAIM
TIMED_CLAIM_FROM_START = """EXPLAIN (ANALYZE, FORMAT JSON) SELECT count(*) FROM pgqd_claim_jobs(
    $1, $2, ARRAY['noop'], ARRAY[0], ARRAY[0.0], ARRAY[0.0], p_scan_from_priority => ARRAY[0],
    p_scan_from_id => ARRAY[$3::bigint])"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", default=os.environ.get("PGQD_BENCH_DSN", DEFAULT_SERVER), help="maintenance DSN")
    p.add_argument("--jobs", type=int, default=2_000_000, help="jobs queued at the start (2,000,000)")
    p.add_argument("--steps", type=int, nargs="+", default=[5_000, 20_000, 40_000, 80_000],
                   help="jobs claimed since the vacuum at each measurement")  # fmt: skip
    p.add_argument("--probe-claims", type=int, default=200, help="claims timed at each step (200)")
    p.add_argument("--output", type=Path, help="JSON file")
    args = p.parse_args(argv)
    if (
        sorted(args.steps) != args.steps
        or args.steps[-1] + args.probe_claims * BATCH * (len(args.steps) + 2) > args.jobs
    ):
        p.error("--steps must rise, and the jobs they and the timed claims take must not be more than --jobs")
    return args


async def claim_and_finish(conn: Any, jobs: int) -> None:
    """Claims ``jobs`` jobs in claims of 10, then deletes them, as their outcomes would."""
    for _ in range(0, jobs, BATCH):
        await conn.fetchval(CLAIM, WORKER_ID, BATCH)
    await conn.execute("DELETE FROM pgqd_jobs WHERE status = 'picked'")


async def measure(conn: Any, claims: int) -> dict[str, float]:
    """The median server times of ``claims`` claims of 10 (then finished), whole and from the first queued job in
    turn, the ready read's best of 5, and the locking reads, whole and from the first queued job."""
    whole: list[float] = []
    from_start: list[float] = []
    for _ in range(claims // 2):
        whole.append(json.loads(await conn.fetchval(TIMED_CLAIM, WORKER_ID, BATCH))[0]["Execution Time"])
        first = await conn.fetchval(FIRST_QUEUED)
        plan = json.loads(await conn.fetchval(TIMED_CLAIM_FROM_START, WORKER_ID, BATCH, first))[0]
        from_start.append(plan["Execution Time"])
    await conn.execute("DELETE FROM pgqd_jobs WHERE status = 'picked'")
    reads = []
    for _ in range(5):
        plan = json.loads(await conn.fetchval(READY_READ))[0]
        reads.append((plan["Execution Time"], plan["Plan"]["Shared Hit Blocks"] + plan["Plan"]["Shared Read Blocks"]))
    best = min(reads)
    first = await conn.fetchval(FIRST_QUEUED)
    full, started = (
        await locking_read(conn, LOCKING_READ.format(start="")),
        await locking_read(conn, LOCKING_READ.format(start=FROM_START), first),
    )
    return {"claim_us": round(1000 * statistics.median(whole), 1),
            "claim_from_start_us": round(1000 * statistics.median(from_start), 1),
            "read_us": round(1000 * best[0], 1), "read_buffers": best[1],
            "locking_read_us": full[0], "locking_read_buffers": full[1],
            "from_start_us": started[0], "from_start_buffers": started[1]}  # fmt: skip


async def locking_read(conn: Any, sql: str, *args: Any) -> tuple[float, int]:
    """The median time (µs) and buffers of 20 runs of a locking read, each rolled back."""
    runs = []
    for _ in range(20):
        transaction = conn.transaction()
        await transaction.start()
        try:
            plan = json.loads(await conn.fetchval(sql, *args))[0]
        finally:
            await transaction.rollback()
        runs.append((plan["Execution Time"], plan["Plan"]["Shared Hit Blocks"] + plan["Plan"]["Shared Read Blocks"]))
    return round(1000 * statistics.median(r[0] for r in runs), 1), int(statistics.median(r[1] for r in runs))


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    async with fresh_database(args.server) as dsn:
        await fill(dsn, args.jobs)  # queued, then vacuumed
        conn = await asyncpg.connect(dsn)
        try:
            rows.append({"claimed_since_vacuum": 0, **await measure(conn, args.probe_claims)})
            done = args.probe_claims * BATCH
            for step in args.steps:
                await claim_and_finish(conn, max(0, step - done))
                done = max(step, done)
                rows.append({"claimed_since_vacuum": done, **await measure(conn, args.probe_claims)})
                done += args.probe_claims * BATCH
            began = time.monotonic()
            await conn.execute("VACUUM pgqd_jobs")
            vacuum_s = round(time.monotonic() - began, 3)
            rows.append({"claimed_since_vacuum": 0, "vacuum_s": vacuum_s, **await measure(conn, args.probe_claims)})
        finally:
            await conn.close()
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rows = run_until_signalled(run(args))
    print(f"{args.jobs:,} jobs queued; claims of {BATCH}")
    print("| jobs claimed since the vacuum | claim (µs, server) | claim from a start (µs) | ready read of 10 (µs) "
          "| its buffers | locking read (µs) | its buffers | locking read from a start (µs) "
          "| its buffers |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        label = f"{row['claimed_since_vacuum']:,}" + (
            f" (vacuumed in {row['vacuum_s']} s)" if "vacuum_s" in row else ""
        )
        print(f"| {label} | {row['claim_us']:,.0f} | {row['claim_from_start_us']:,.0f} | {row['read_us']:,.0f} "
              f"| {row['read_buffers']} | {row['locking_read_us']:,.0f} | {row['locking_read_buffers']} "
              f"| {row['from_start_us']:,.0f} | {row['from_start_buffers']} |")  # fmt: skip
    if args.output:
        args.output.write_text(json.dumps({"benchmark": "ready_head", "jobs": args.jobs, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
