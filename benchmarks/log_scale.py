"""The log at scale: outcome writes, retention, the overview and a one-day job search with 10^8 log rows.

Fills the partitioned log of a fresh database with ``--rows`` finished jobs over the last ``--days`` days with
INSERT ... SELECT generate_series, one day's partition at a time (never through the daemon), and then measures:

- outcome writes: the real outcome statement recording ``--batch`` picked jobs, interleaved over three databases:
  this schema with the full log, this schema with an empty log, and the schema before the log was partitioned
  (empty log, block-range index on finished_at): cost per flush, median and ratios;
- the per-minute counts of the last day, as the lead worker makes them (time per hour of rows);
- the overview (the web page's two queries: queues, and the chart of the last hour by minute), and a job search
  over one day by finish time, ``--repeat`` times each: median and p95;
- retention: the lead worker's round that drops the oldest day, next to one batch of the row-by-row deletion
  it replaced (10,000 rows).

Then, for the overview after a mass delete (the disorder of a pruned, refilled log), on both schemas:
``--disorder-rows`` rows over the last day, a third of them deleted here and there and vacuumed (free space
everywhere), then ``--deleted`` jobs deleted at once by an operator (rows logged now, into that free space):
the chart's query, the previous version's statement on the previous schema against this version's.

The free disk is checked first; the row count is lowered to what fits (with room to spare), never below
``--min-rows``. Every database is dropped at the end.

    .venv/bin/python -m benchmarks.log_scale [--rows 100000000] [--days 7] [--batch 100] [--flushes 200]
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from benchmarks.common import empty_database, environment, fresh_database, parser, report, run_until_signalled
from pgqd.daemon.worker.log_partitions import DAY, LogPartitionUpkeep
from pgqd.identifiers import Names
from pgqd.ops.browse import JobFilter, JobSearch
from pgqd.ops.stats import QueueStats
from pgqd.sql import migrations, render
from pgqd.sql.log_partitions import LogPartitionStatements
from pgqd.sql.statements import RECORD_OUTCOMES
from pgqd.sql.stats import WITHOUT_JIT

NAMES = Names()
# Heap and both indexes, per log row as generated here, with room to spare.
BYTES_PER_ROW = 220
DISK_RESERVE = 20 * 2**30

# The row-by-row retention of schema version 10, before the log was partitioned: one pruner at a time deletes a
# bounded batch. Daemons of that version still run it against the partitioned log while an upgrade rolls out.
PREVIOUS_PRUNE_LOG = """
WITH turn AS MATERIALIZED (
    SELECT pg_try_advisory_xact_lock(hashtext($3::text)) AS mine
),
batch AS (
    SELECT l.job_id FROM {log} AS l, turn AS t
    WHERE t.mine AND l.finished_at < now() - make_interval(secs => $1::double precision)
    LIMIT $2::integer
)
DELETE FROM {log} AS l USING batch AS b WHERE l.job_id = b.job_id
"""

# Setup, not a measured path: $1..$2 the job ids of the slice, $3 its last finish time, $4 seconds between rows.
FILL_LOG = """
INSERT INTO pgqd_log (job_id, entrypoint, priority, status, attempts, worker_id, created_at, started_at, finished_at)
SELECT g, (ARRAY['send_email', 'resize_image', 'flaky_webhook', 'poll_feed'])[1 + g % 4], g % 3,
       (CASE WHEN g % 100 < 4 THEN 'exception' WHEN g % 100 = 4 THEN 'canceled' ELSE 'successful' END)
           ::pgqd_final_status,
       1 + (g % 100 < 4)::integer, 1 + g % 8,
       f - interval '2 seconds', f - interval '50 milliseconds', f
FROM generate_series($1::bigint, $2::bigint) AS g,
     LATERAL (SELECT $3::timestamptz - (($2::bigint - g) * $4::double precision) * interval '1 second' AS f) AS t
"""

PICKED_JOBS = """
INSERT INTO pgqd_jobs (entrypoint, status, worker_id, picked_at, attempts)
SELECT 'send_email', 'picked', 1, now(), 1 FROM generate_series(1, $1) RETURNING id
"""

PARTITION_INDEXES = """
SELECT c.relname AS name, pg_get_indexdef(c.oid) AS definition
FROM pgqd_log_partitions() AS p
JOIN pg_index AS i ON i.indrelid = p.partition
JOIN pg_class AS c ON c.oid = i.indexrelid
"""

LOG_PARTITION_ROWS = """
SELECT sum(c.reltuples)::bigint FROM pgqd_log_partitions() AS p JOIN pg_class AS c ON c.oid = p.partition
"""

# The chart's statement as the version before partitioning shipped it (it read the log through a block-range
# index on finished_at).
PREVIOUS_CHART = """
SELECT to_timestamp(floor(extract(epoch FROM l.finished_at) / $2) * $2) AS bucket_start, l.entrypoint,
       count(*) FILTER (WHERE l.status = 'successful') AS succeeded,
       count(*) FILTER (WHERE l.status IN ('exception', 'timeout')) AS failed,
       count(*) FILTER (WHERE l.status NOT IN ('successful', 'exception', 'timeout')) AS other
FROM pgqd_log AS l
WHERE l.finished_at > now() - make_interval(secs => $1)
  AND ($3::text IS NULL OR l.entrypoint = $3)
GROUP BY 1, 2
ORDER BY 1, 2
"""


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"median_ms": ms(statistics.median(ordered)), "p95_ms": ms(ordered[int(0.95 * (len(ordered) - 1))])}


async def timed(call: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


# The partitioning of the log and what builds on it: the previous schema is today's without them.
PARTITIONING = ("partitioned_log", "workflow_retention")


async def apply_migrations(conn: Any, partitioning: bool) -> None:
    """The migrations of the partitioning (or all the others), in order, each recorded as applied."""
    for migration in (m for m in migrations(NAMES) if (m.name in PARTITIONING) == partitioning):
        for step in migration.steps:
            async with conn.transaction():
                await conn.execute(step)
        await conn.execute(
            "INSERT INTO pgqd_schema_version (version, name) VALUES ($1, $2)", migration.version, migration.name
        )


async def install_previous_version(conn: Any) -> None:
    """Today's schema with the log as one table."""
    await apply_migrations(conn, partitioning=False)


async def rows_that_fit(conn: Any, wanted: int, floor: int) -> tuple[int, float]:
    directory = await conn.fetchval("SHOW data_directory")
    free = shutil.disk_usage(directory).free
    fits = max((free - DISK_RESERVE) // BYTES_PER_ROW, 0)
    return max(min(wanted, fits), floor), round(free / 2**30, 1)


async def add_day_partitions(conn: Any, first: datetime, last: datetime) -> None:
    day = first
    while day <= last:
        covered = await conn.fetchval(
            "SELECT count(*) FROM pgqd_log_partitions() WHERE lower_bound <= $1 AND upper_bound > $1", day
        )
        if not covered:
            await conn.fetchval("SELECT pgqd_log_add_partition($1, $2)", day, day + timedelta(days=1))
        day += timedelta(days=1)


async def fill_log(conn: Any, rows: int, days: float, partitioned: bool) -> float:
    """``rows`` log rows evenly over the last ``days`` days, ending now; returns the seconds it took."""
    now: datetime = await conn.fetchval("SELECT now()")
    spacing = days * DAY / rows
    start = now - timedelta(seconds=days * DAY)
    if partitioned:
        first = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        await add_day_partitions(conn, first, now.astimezone(UTC))
    started = time.perf_counter()
    await conn.execute("SET maintenance_work_mem = '1GB'")
    # The partitions' indexes are built once their rows are in, much faster than row by row.
    indexes = await conn.fetch(PARTITION_INDEXES) if partitioned else []
    for index in indexes:
        await conn.execute(f'DROP INDEX "{index["name"]}"')
    per_slice = max(int(DAY / spacing), 1)
    for lo in range(1, rows + 1, per_slice):
        hi = min(lo + per_slice - 1, rows)
        await conn.execute(FILL_LOG, lo, hi, now - timedelta(seconds=(rows - hi) * spacing), spacing)
        print(f"log_scale: {hi:,} of {rows:,} log rows in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    for index in indexes:
        await conn.execute(index["definition"])
    await conn.execute("VACUUM (ANALYZE) pgqd_log")
    return time.perf_counter() - started


async def record_flush(conn: Any, statement: str, batch: int) -> float:
    ids = [r["id"] for r in await conn.fetch(PICKED_JOBS, batch)]
    args = (
        1,
        ids,
        ["successful"] * batch,
        [0.001] * batch,
        [0.002] * batch,
        [None] * batch,
        [None] * batch,
        [None] * batch,
        [None] * batch,
        [],
        [],
        [],
        [],
        "pgqd_bench",
        [],
        [],  # no entrypoint keeps its payload
        [None] * batch,  # no results handed to children
    )
    return await timed(lambda: conn.fetchval(statement, *args))


async def outcome_writes(conns: dict[str, Any], batch: int, flushes: int) -> dict[str, Any]:
    statement = render(RECORD_OUTCOMES, NAMES)
    samples: dict[str, list[float]] = {name: [] for name in conns}
    for _ in range(5):  # warm-up: prepared statements, caches
        for conn in conns.values():
            await record_flush(conn, statement, batch)
    for _ in range(flushes):
        for name, conn in conns.items():
            samples[name].append(await record_flush(conn, statement, batch))
    result: dict[str, Any] = {name: summary(s) for name, s in samples.items()}
    base = statistics.median(samples["empty_log"])
    result["ratio_full_to_empty"] = round(statistics.median(samples["full_log"]) / base, 3)
    result["ratio_partitioned_to_previous_schema"] = round(base / statistics.median(samples["previous_schema"]), 3)
    return result


async def roll_last_day(dsn: str, conn: Any) -> dict[str, float]:
    """The per-minute counts of the last day, as a lead worker that ran all along would have made them."""
    await conn.execute(
        "UPDATE pgqd_log_minutes_rolled SET rolled_from = date_trunc('minute', now() - interval '1 day'), "
        "rolled_until = date_trunc('minute', now() - interval '1 day')"
    )
    upkeep = LogPartitionUpkeep(dsn, NAMES, retention=None)
    try:
        took = 0.0
        for _ in range(3):
            took += await timed(upkeep.step)
    finally:
        upkeep.close()
    return {"last_day_s": round(took, 2), "per_hour_of_rows_ms": ms(took / 24)}


async def overview_and_search(conn: Any, repeat: int) -> dict[str, Any]:
    stats, search = QueueStats(conn, NAMES), JobSearch(conn, NAMES)
    now: datetime = await conn.fetchval("SELECT now()")
    day = (now - timedelta(days=3)).astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    one_day = JobFilter(finished_from=day, finished_until=day + timedelta(days=1))
    failures = JobFilter(status="exception", finished_from=day, finished_until=day + timedelta(days=1))

    async def overview() -> None:
        await stats.queues(10_000)
        await stats.throughput_series(3600.0, 60.0)

    results: dict[str, Any] = {}
    for name, call in (
        ("overview", overview),
        ("chart_last_hour", lambda: stats.throughput_series(3600.0, 60.0)),
        ("search_one_day", lambda: search.page(one_day)),
        ("search_one_day_failures", lambda: search.page(failures)),
    ):
        await call()
        results[name] = summary([await timed(call) for _ in range(repeat)])
    page = await search.page(one_day)
    results["search_one_day"]["rows"] = len(page.rows)
    return results


async def retention(dsn: str, conn: Any, days: float) -> dict[str, Any]:
    """One batch of the old row-by-row pruning; the drop of the oldest day on its own; a whole round of the lead
    worker's upkeep that drops nothing, and one that drops the next day."""
    sql = LogPartitionStatements(NAMES)
    # Old enough for the batch to be full: the ids grow with the finish time.
    age = await conn.fetchval("SELECT date_part('epoch', now() - finished_at) FROM pgqd_log WHERE job_id = 10001")
    status = ""

    async def delete_batch() -> None:
        nonlocal status
        status = await conn.execute(render(PREVIOUS_PRUNE_LOG, NAMES), age, 10_000, "bench-prune")

    deleting = await timed(delete_batch)
    oldest = (await conn.fetch(sql.partitions))[0]
    rows = await conn.fetchval("SELECT reltuples::bigint FROM pg_class WHERE oid = $1::text::regclass", oldest["name"])
    await conn.execute("SET lock_timeout = '500ms'")
    # Outcome writes wait for the first (a lock on the log), not for the second (the files freed).
    detaching = await timed(lambda: conn.fetchval(sql.drop_partition, oldest["name"], oldest["upper_bound"]))
    dropping = await timed(lambda: conn.fetchval(sql.drop_detached))
    upkeep = LogPartitionUpkeep(dsn, NAMES, retention=(days + 2) * DAY)
    try:
        await upkeep.step()  # the connection opened, the minutes since counted
        idle_round = await timed(upkeep.step)
        upkeep.retention = (days - 2) * DAY
        plans: list[Any] = []

        async def round_with_drop() -> None:
            plans.append(await upkeep.step())

        drop_round = await timed(round_with_drop)
    finally:
        upkeep.close()
    rounds = {
        "round_without_drop_ms": ms(idle_round),
        "round_with_drop_ms": ms(drop_round),
        "days_dropped_in_round": len(plans[0].drop) if plans[0] else 0,
    }
    return {
        "detach_one_day_ms": ms(detaching),
        "drop_detached_day_ms": ms(dropping),
        "rows_in_that_day": rows,
        **rounds,
        "row_delete_ms": ms(deleting),
        "row_delete_rows": int(status.split()[-1]),
    }


async def chart_times(conn: Any, partitioned: bool, repeat: int) -> dict[str, float]:
    """The last hour's chart: this version's on the partitioned log, the previous version's statement else."""
    stats = QueueStats(conn, NAMES)

    async def previous_chart() -> Any:
        async with conn.transaction():
            await conn.execute(WITHOUT_JIT)
            return await conn.fetch(PREVIOUS_CHART, 3600.0, 60.0, None)

    async def chart() -> Any:
        return await (stats.throughput_series(3600.0, 60.0) if partitioned else previous_chart())

    await chart()
    return summary([await timed(chart) for _ in range(repeat)])


async def disorder(server: str, rows: int, deleted: int, repeat: int) -> dict[str, Any]:
    """The chart after mass deletes, on the previous schema (its statement) and on this one."""
    out: dict[str, Any] = {"log_rows": rows, "deleted_jobs": deleted}
    for schema in ("previous_schema", "partitioned"):
        async with empty_database(server) as dsn:
            conn = await asyncpg.connect(dsn)
            try:
                if schema == "partitioned":
                    from pgqd import install

                    await install(conn)
                else:
                    await install_previous_version(conn)
                await fill_log(conn, rows, 1.0, schema == "partitioned")
                await conn.execute("DELETE FROM pgqd_log WHERE job_id % 3 = 0")  # pruned here and there
                await conn.execute("VACUUM pgqd_log")
                # An operator deletes many jobs at once: their rows are logged now, into the free space.
                await conn.execute(
                    "INSERT INTO pgqd_log (job_id, entrypoint, priority, status, attempts, created_at) "
                    "SELECT $1::bigint + g, 'send_email', 0, 'deleted', 0, now() FROM generate_series(1, $2) AS g",
                    rows,
                    deleted,
                )
                await conn.execute("ANALYZE pgqd_log")
                if schema == "partitioned":
                    await roll_last_day(dsn, conn)
                out[schema] = await chart_times(conn, schema == "partitioned", repeat)
                if schema == "previous_schema":
                    started = time.perf_counter()
                    await apply_migrations(conn, partitioning=True)
                    out["upgrade_s"] = round(time.perf_counter() - started, 2)
            finally:
                await conn.close()
    return out


async def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--rows", type=int, default=100_000_000)
    p.add_argument("--min-rows", type=int, default=20_000_000)
    p.add_argument("--days", type=float, default=7.0)
    p.add_argument("--batch", type=int, default=100, help="jobs per outcome flush")
    p.add_argument("--flushes", type=int, default=200)
    p.add_argument("--repeat", type=int, default=20, help="timings of each read")
    p.add_argument("--disorder-rows", type=int, default=1_000_000)
    p.add_argument("--deleted", type=int, default=15_000)
    args = p.parse_args()
    env = await environment(args.server)
    admin = await asyncpg.connect(args.server)
    try:
        rows, free_gb = await rows_that_fit(admin, args.rows, min(args.min_rows, args.rows))
    finally:
        await admin.close()
    env["free_disk_gb_before"] = free_gb
    env["load_average_before"] = list(os.getloadavg())
    results: list[dict[str, Any]] = []
    async with (
        fresh_database(args.server) as full_dsn,
        fresh_database(args.server) as empty_dsn,
        empty_database(args.server) as previous_dsn,
    ):
        conns = {
            # As the web UI's connections: without JIT compilation, which takes longer than these reads.
            "full_log": await asyncpg.connect(full_dsn, server_settings={"jit": "off"}),
            "empty_log": await asyncpg.connect(empty_dsn),
            "previous_schema": await asyncpg.connect(previous_dsn),
        }
        try:
            await install_previous_version(conns["previous_schema"])
            filled = await fill_log(conns["full_log"], rows, args.days, True)
            size = await conns["full_log"].fetchval("SELECT pg_database_size(current_database())")
            gigabytes = round(size / 2**30, 1)
            results.append({"measure": "fill", "log_rows": rows, "seconds": round(filled, 1), "database_gb": gigabytes})
            writes = await outcome_writes(conns, args.batch, args.flushes)
            results.append({"measure": "outcome_write", "batch": args.batch, "flushes": args.flushes, **writes})
            results.append({"measure": "minute_counts", **await roll_last_day(full_dsn, conns["full_log"])})
            reads = await overview_and_search(conns["full_log"], args.repeat)
            results.append({"measure": "reads", **reads})
            results.append({"measure": "retention", **await retention(full_dsn, conns["full_log"], args.days)})
        finally:
            for conn in conns.values():
                await conn.close()
    after_delete = await disorder(args.server, args.disorder_rows, args.deleted, args.repeat)
    results.append({"measure": "overview_after_mass_delete", **after_delete})
    env["load_average_after"] = list(os.getloadavg())
    # Rows of different measures have different fields: JSON only.
    report("log_scale", results, env, True)


if __name__ == "__main__":
    run_until_signalled(main())
