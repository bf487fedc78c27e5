"""Server time of the web UI's history, running-jobs and seek queries with a million rows in the log.

Fills a fresh database with INSERT ... SELECT generate_series: --log finished jobs (default 1,000,000) spread over
the last --days days (default 1: the densest last hour and day), over four entrypoints, with run times and queue
waits spread over four decades and 5% failures; 100,000 live jobs and 100 running ones on 4 workers. Rolls the
log up as a daemon's lead worker does on its first pass, then times each statement with EXPLAIN ANALYZE
(execution time on the server, median of --runs after one warm-up). Then it does what a retention prune followed
by a bulk delete does to the log's physical order (the oldest tenth deleted and vacuumed, 15,000 rows finishing
now written into the freed pages) and times the statements that read the log again.

    .venv/bin/python -m benchmarks.history_queries [--log 1000000] [--days 1] [--runs 5]
"""

from __future__ import annotations

import json
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from benchmarks.common import environment, fresh_database, parser, report, run_until_signalled
from benchmarks.web_pages import ENTRYPOINTS, FILL_LIVE, FILL_RUNNING
from pgqd.daemon.worker.log_rollup import LogRollup, hour_of
from pgqd.identifiers import Names
from pgqd.models import MAX_JOB_ID
from pgqd.ops.history import SPANS
from pgqd.ops.seek import id_bounds
from pgqd.sql import browse, render
from pgqd.sql.history import HistoryStatements
from pgqd.sql.seek import CREATED_CURSORS

# Finished jobs in time order, as they would be written; run time 10 ms to 1.5 s, wait 5 ms to 2 s (log-uniform).
FILL_LOG = """
INSERT INTO pgqd_log (job_id, entrypoint, priority, status, attempts, created_at, execute_after, started_at,
                      finished_at, error_type, error_message)
SELECT 5000000 + g, ($2::text[])[1 + g % 4], 0,
       (CASE WHEN g % 20 = 0 THEN 'exception' ELSE 'successful' END)::pgqd_final_status, 1,
       t.at - d.run - d.wait - interval '1 s', t.at - d.run - d.wait, t.at - d.run, t.at,
       CASE WHEN g % 20 = 0 THEN 'ConnectionError' END, CASE WHEN g % 20 = 0 THEN 'connection reset by peer' END
FROM generate_series(1, $1) AS g,
     LATERAL (SELECT now() - $3::interval + g * ($3::interval / $1) AS at) AS t,
     LATERAL (SELECT make_interval(secs => 0.01 * exp(5 * random()) + 0 * g) AS run,
                     make_interval(secs => 0.005 * exp(6 * random()) + 0 * g) AS wait) AS d
"""

# A retention prune of the oldest tenth, then a bulk delete's log rows: they land in the pages the prune freed.
PRUNE_OLDEST_TENTH = """
DELETE FROM pgqd_log WHERE job_id < (SELECT min(job_id) + (max(job_id) - min(job_id)) / 10 FROM pgqd_log)
"""
BULK_DELETED = """
INSERT INTO pgqd_log (job_id, entrypoint, priority, status, attempts, created_at, finished_at)
SELECT 9000000 + g, 'send_email', 0, 'deleted', 0, now() - interval '2 hours', now() - g * interval '1 ms'
FROM generate_series(1, 15000) AS g
"""


async def server_ms(conn: Any, statement: str, args: tuple[Any, ...], runs: int) -> dict[str, Any]:
    """Median and worst execution time of ``statement`` on the server, and the rows it returned."""
    times, rows = [], 0
    for attempt in range(runs + 1):
        plan = json.loads(await conn.fetchval("EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) " + statement, *args))[0]
        if attempt:
            times.append(plan["Execution Time"])
            rows = plan["Plan"]["Actual Rows"]
    return {"median_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1), "rows": rows}


async def measure_write(conn: Any, statement: str, args: tuple[Any, ...], runs: int) -> dict[str, Any]:
    """The same for a write, each run rolled back."""
    times = []
    for attempt in range(runs + 1):
        transaction = conn.transaction()
        await transaction.start()
        try:
            plan = json.loads(await conn.fetchval("EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) " + statement, *args))[0]
        finally:
            await transaction.rollback()
        if attempt:
            times.append(plan["Execution Time"])
    return {"median_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1), "rows": None}


def reads(sql: HistoryStatements, now: datetime, names: Names) -> list[tuple[str, str, tuple[Any, ...]]]:
    def span_args(name: str, entrypoint: str | None, statuses: list[str] | None) -> tuple[Any, ...]:
        span = SPANS[name]
        step = timedelta(seconds=span.slice_seconds)
        end = datetime.fromtimestamp(now.timestamp() - now.timestamp() % span.slice_seconds, UTC) + step
        return end - timedelta(seconds=span.seconds), end, float(span.slice_seconds), entrypoint, statuses

    search = render(browse.SEARCH_JOBS, names)
    until, since = now - timedelta(hours=12), now - timedelta(hours=12, minutes=30)
    failures = (MAX_JOB_ID, 20000, True, True, None, "exception", since, until, None, None, 51, None, None, None,
                "BOUNDS")  # fmt: skip
    return [
        ("history 1h, from the log", sql.histograms_from_log, span_args("1h", None, None)),
        ("history 1h, one entrypoint, failures", sql.histograms_from_log, span_args("1h", "send_email", ["exception"])),
        ("history 24h, from the rollup", sql.histograms_from_rollup, span_args("24h", None, None)),
        ("history 7d, from the rollup", sql.histograms_from_rollup, span_args("7d", None, None)),
        ("history 7d, one entrypoint", sql.histograms_from_rollup, span_args("7d", "send_email", None)),
        ("(history 24h from the log, for comparison)", sql.histograms_from_log, span_args("24h", None, None)),
        ("running jobs", sql.running_jobs, (None, 500)),
        ("typical run times, last hour", sql.typical_run_times, (3600.0, list(ENTRYPOINTS))),
        ("seek: cursors for a time 12 h ago", render(CREATED_CURSORS, names), (until,)),
        ("job search, failures created in 30 min 12 h ago", search, failures),
    ]


async def measure_all(conn: Any, names: Names, runs: int, phase: str) -> list[dict[str, Any]]:
    sql = HistoryStatements(names)
    now = await conn.fetchval("SELECT now()")
    results = []
    for name, statement, args in reads(sql, now, names):
        if args[-1] == "BOUNDS":  # the ids of each table the time range leaves, as the web UI finds them
            b = await id_bounds(conn, names, args[6], args[7])
            args = (*args[:-1], b.live_from, b.live_until, b.log_from, b.log_until)
        results.append({"phase": phase, "query": name, **await server_ms(conn, statement, args, runs)})
    current = hour_of(now)
    results.append(
        {
            "phase": phase,
            "query": "rollup pass, current hour",
            **await measure_write(conn, sql.roll_up, (current, current + timedelta(hours=1)), runs),
        }
    )
    return results


async def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--log", type=int, default=1_000_000, help="finished jobs in the log (default 1,000,000)")
    p.add_argument("--days", type=float, default=1.0, help="days the log rows are spread over (default 1)")
    p.set_defaults(runs=5)
    args = p.parse_args()
    env = await environment(args.server)
    names = Names()
    async with fresh_database(args.server) as dsn:
        conn = await asyncpg.connect(dsn, server_settings={"jit": "off"})
        try:
            started = time.monotonic()
            await conn.execute(FILL_LIVE, 100_000, list(ENTRYPOINTS))
            await conn.execute(FILL_RUNNING, 100, list(ENTRYPOINTS))
            await conn.execute(FILL_LOG, args.log, list(ENTRYPOINTS), timedelta(days=args.days))
            await conn.execute("VACUUM ANALYZE pgqd_jobs")
            await conn.execute("VACUUM ANALYZE pgqd_log")
            fill = time.monotonic() - started
            started = time.monotonic()
            await LogRollup(dsn, names).step()
            catch_up = time.monotonic() - started
            rollup_rows = await conn.fetchval("SELECT count(*) FROM pgqd_log_rollup")
            await conn.execute("ANALYZE pgqd_log_rollup")
            results = await measure_all(conn, names, args.runs, "fresh")
            await conn.execute(PRUNE_OLDEST_TENTH)
            await conn.execute("VACUUM ANALYZE pgqd_log")
            await conn.execute(BULK_DELETED)
            await conn.execute("ANALYZE pgqd_log")
            results += await measure_all(conn, names, args.runs, "after prune + bulk delete")
        finally:
            await conn.close()
    env["rows"] = {
        "log": args.log,
        "days": args.days,
        "rollup_rows": rollup_rows,
        "fill_seconds": round(fill),
        "rollup_catch_up_seconds": round(catch_up, 1),
    }
    report("history_queries", results, env, args.json)


if __name__ == "__main__":
    run_until_signalled(main())
