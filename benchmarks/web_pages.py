"""Web UI page times with a million live jobs and a million finished ones in the log.

Fills a fresh database with INSERT ... SELECT generate_series (1,000,000 live jobs over four entrypoints: 89.9%
queued, 10% deferred, 0.1% held, 100 running; 1,000,000 log rows over the last 24 hours, 5% of them failures),
rolls the log up as a daemon's lead worker does, starts the real `pgqd web` on it in its shipped configuration,
and times each page over HTTP.

    .venv/bin/python -m benchmarks.web_pages [--live 1000000] [--log 1000000] [--requests 20] [--mass-delete 15000]

With ``--mass-delete N`` the pages are timed after ordinary use has scattered the log: a third of its rows
deleted and the table vacuumed (free space all over it), then N queued jobs deleted at once (as "every matching
job" does), whose log rows land in that free space.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks.common import environment, fresh_database, parser, report, run_until_signalled
from pgqd import PostgresBackend
from pgqd.daemon.worker.log_partitions import LogPartitionUpkeep
from pgqd.daemon.worker.log_rollup import LogRollup
from pgqd.identifiers import Names

BUDGET_MS = 200.0
ENTRYPOINTS = ("send_email", "resize_image", "flaky_webhook", "poll_feed")

FILL_LIVE = """
INSERT INTO pgqd_jobs (entrypoint, payload, priority, status, execute_after, created_at, attempts, last_error)
SELECT ($2::text[])[1 + g % 4],
       convert_to('{"to": "user' || g || '@example.com", "template": "welcome", "n": ' || g || '}', 'UTF8'),
       g % 5,
       (CASE WHEN g % 10 = 0 THEN 'deferred' WHEN g % 1000 = 1 THEN 'failed' ELSE 'queued' END)::pgqd_job_status,
       CASE WHEN g % 10 = 0 THEN now() + interval '1 hour' + g * interval '1 ms'
            ELSE now() - interval '2 hours' + g * interval '5 ms' END,
       now() - interval '2 hours' + g * interval '5 ms',
       CASE WHEN g % 1000 = 1 THEN 3 ELSE 0 END,
       CASE WHEN g % 1000 = 1 THEN jsonb_build_object('type', 'TimeoutError', 'message',
            'upstream timeout after 30s', 'traceback', 'Traceback (most recent call last): ...') END
FROM generate_series(1, $1) AS g
"""

FILL_RUNNING = """
WITH w AS (
    INSERT INTO pgqd_workers (host, pid, entrypoints) SELECT 'bench-' || g, 1000 + g, $2::text[]
    FROM generate_series(1, 4) AS g RETURNING id
)
INSERT INTO pgqd_jobs (entrypoint, payload, status, picked_at, worker_id, attempts)
SELECT ($2::text[])[1 + g % 4], convert_to('{"running": ' || g || '}', 'UTF8'), 'picked', now(),
       (SELECT min(id) FROM w) + g % 4, 1
FROM generate_series(1, $1) AS g
"""

# Finished jobs take ids above the live ones, in finishing order, as they would.
FILL_LOG = """
INSERT INTO pgqd_log (job_id, entrypoint, priority, status, attempts, created_at, started_at, finished_at,
                      error_type, error_message, error_traceback)
SELECT 5000000 + g, ($2::text[])[1 + g % 4], 0,
       (CASE WHEN g % 20 = 0 THEN 'exception' ELSE 'successful' END)::pgqd_final_status, 1,
       t.at - interval '2 s', t.at - interval '1 s', t.at,
       CASE WHEN g % 20 = 0 THEN 'ConnectionError' END,
       CASE WHEN g % 20 = 0 THEN 'connection reset by peer' END,
       CASE WHEN g % 20 = 0 THEN 'Traceback (most recent call last): ...' END
FROM generate_series(1, $1) AS g,
     LATERAL (SELECT now() - interval '24 hours' + g * (interval '24 hours' / $1) AS at) AS t
"""

FILL_SCHEDULES = """
INSERT INTO pgqd_schedules (name, cron, timezone, entrypoint, next_run)
SELECT 'schedule_' || g, '*/5 * * * *', 'UTC', ($1::text[])[1 + g % 4], now() + interval '5 minutes'
FROM generate_series(1, 20) AS g
"""


async def fill(dsn: str, live: int, logged: int, mass_delete: int) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        started = time.monotonic()
        await conn.execute(FILL_LIVE, live, list(ENTRYPOINTS))
        await conn.execute(FILL_RUNNING, 100, list(ENTRYPOINTS))
        # The days the log rows fall on, as the lead worker would have created them while the rows were written.
        await conn.execute(PAST_PARTITIONS)
        await conn.execute(FILL_LOG, logged, list(ENTRYPOINTS))
        await conn.execute(FILL_SCHEDULES, list(ENTRYPOINTS))
        if mass_delete:
            await conn.execute("DELETE FROM pgqd_log WHERE job_id % 3 = 0")
            await conn.execute("VACUUM pgqd_log")
            doomed = await conn.fetch(
                "SELECT id FROM pgqd_jobs WHERE status = 'queued' ORDER BY id LIMIT $1", mass_delete
            )
            await PostgresBackend(conn).cancel([row["id"] for row in doomed], "deleted")
        await conn.execute("VACUUM ANALYZE pgqd_jobs")
        await conn.execute("ANALYZE pgqd_log")
        # As a running daemon's lead worker would have: the hourly rollup, and the log's upkeep (minutes counted).
        await LogRollup(dsn, Names()).step()
        upkeep = LogPartitionUpkeep(dsn, Names(), retention=None)
        try:
            await upkeep.step()
        finally:
            upkeep.close()
        ids = {
            "live_id": await conn.fetchval("SELECT max(id) FROM pgqd_jobs WHERE status = 'queued'"),
            "held_id": await conn.fetchval("SELECT min(id) FROM pgqd_jobs WHERE status = 'failed'"),
            "finished_id": await conn.fetchval("SELECT max(job_id) FROM pgqd_log"),
            "middle_id": live // 2,
            "seek_until": f"{datetime.now(UTC) - timedelta(hours=12):%Y-%m-%dT%H:%M}",
            "seek_from": f"{datetime.now(UTC) - timedelta(hours=12, minutes=30):%Y-%m-%dT%H:%M}",
            "fill_seconds": round(time.monotonic() - started),
        }
    finally:
        await conn.close()
    return ids


PAST_PARTITIONS = """
SELECT "public"."pgqd_log_add_partition"(d, d + interval '1 day')
FROM generate_series(date_trunc('day', now(), 'UTC') - interval '2 days',
                     date_trunc('day', now(), 'UTC') - interval '1 day', interval '1 day') AS d
"""


def pages(ids: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        ("overview", "/"),
        ("overview, live part", "/live/overview"),
        ("jobs, newest", "/jobs"),
        ("jobs, filtered", "/jobs?entrypoint=send_email&status=failed&q=timeout"),
        ("jobs, finished failures", "/jobs?entrypoint=send_email&status=exception&q=reset"),
        ("jobs, payload text", "/jobs?q=user424242@"),
        ("jobs, queued of one entrypoint", "/jobs?entrypoint=poll_feed&status=queued"),
        ("jobs, deferred", "/jobs?status=deferred"),
        ("jobs, a page deep in", f"/jobs?before={ids['middle_id']}"),
        ("job, live", f"/jobs/{ids['live_id']}"),
        ("job, held", f"/jobs/{ids['held_id']}"),
        ("job, finished", f"/jobs/{ids['finished_id']}"),
        ("job, unknown (404)", "/jobs/999999999"),
        ("failures", "/failures"),
        ("schedules", "/schedules"),
        ("workers", "/workers"),
        ("running", "/running"),
        ("history, last hour", "/history"),
        ("history, 24 hours", "/history?range=24h"),
        ("history, 7 days, one entrypoint", "/history?range=7d&entrypoint=send_email"),
        (
            "jobs, failures in 30 min 12 h ago",
            f"/jobs?status=exception&from={ids['seek_from']}&until={ids['seek_until']}",
        ),
        ("jobs, by dedupe key", "/jobs?key=welcome:42"),
    ]


def timed_get(url: str) -> tuple[float, int]:
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        error.read()
        status = error.code
    return (time.perf_counter() - started) * 1000, status


def measure(base: str, ids: dict[str, Any], requests: int) -> list[dict[str, Any]]:
    results = []
    for name, path in pages(ids):
        for _ in range(2):
            timed_get(base + path)
        times, statuses = [], set()
        for _ in range(requests):
            elapsed, status = timed_get(base + path)
            times.append(elapsed)
            statuses.add(status)
        times.sort()
        p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
        results.append(
            {
                "page": name,
                "path": path,
                "status": ",".join(map(str, sorted(statuses))),
                "p50_ms": round(statistics.median(times), 1),
                "p95_ms": round(p95, 1),
                "max_ms": round(times[-1], 1),
                "under_200ms": p95 < BUDGET_MS,
            }
        )
    return results


def serve(dsn: str, port: int) -> subprocess.Popen[bytes]:
    folder = Path(tempfile.mkdtemp(prefix="pgqd-web-bench-"))
    config = folder / "queue.toml"
    config.write_text("".join(f'[entrypoints.{e}]\nhandler = "examples.app:{e}"\n' for e in ENTRYPOINTS))
    pgqd = str(Path(sys.executable).with_name("pgqd"))
    return subprocess.Popen(
        [pgqd, "web", "--config", str(config), "--listen", f"127.0.0.1:{port}"],
        env={**os.environ, "PGQD_DSN": dsn},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_ready(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"pgqd web exited with {process.returncode}")
        try:
            timed_get(base + "/static/style.css")
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("pgqd web did not answer within 30 s")


async def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--live", type=int, default=1_000_000, help="live jobs (default 1,000,000)")
    p.add_argument("--log", type=int, default=1_000_000, help="finished jobs in the log (default 1,000,000)")
    p.add_argument("--requests", type=int, default=20, help="timed requests per page (default 20)")
    p.add_argument("--port", type=int, default=9475, help="port for the web UI (default 9475)")
    p.add_argument("--mass-delete", type=int, default=0, help="scatter the log, then delete this many jobs at once")
    args = p.parse_args()
    env = await environment(args.server)
    async with fresh_database(args.server) as dsn:
        ids = await fill(dsn, args.live, args.log, args.mass_delete)
        base = f"http://127.0.0.1:{args.port}"
        process = serve(dsn, args.port)
        try:
            wait_ready(base, process)
            results = measure(base, ids, args.requests)
        finally:
            process.terminate()
            process.wait(10)
    env["rows"] = {
        "live": args.live,
        "log": args.log,
        "mass_delete": args.mass_delete,
        "fill_seconds": ids["fill_seconds"],
    }
    report("web_pages", results, env, args.json)


if __name__ == "__main__":
    run_until_signalled(main())
