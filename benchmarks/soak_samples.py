"""What the soak benchmark reads while it runs, and afterwards from the log: one sample of the queue, the
worker processes and the tables, and the figures of a window of time."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
from pathlib import Path
from typing import Any

from benchmarks.profile_drain import cpu_times

# Jobs finished in a window, and their waits: from enqueue (created_at) to the handler's start, in seconds.
FINISHED_IN = """
SELECT count(*) AS finished,
       percentile_disc(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - created_at)) AS p50,
       percentile_disc(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - created_at)) AS p99,
       max(extract(epoch FROM started_at - created_at)) AS longest,
       min(started_at) AS first_start, max(finished_at) AS last_finish
FROM pgqd_log WHERE finished_at > $1 AND finished_at <= $2
"""
TABLE = """
SELECT (SELECT count(*) FROM pgqd_jobs) AS jobs,
       pg_relation_size('pgqd_jobs') AS jobs_bytes,
       pg_indexes_size('pgqd_jobs') AS jobs_indexes_bytes,
       pg_total_relation_size('pgqd_log') AS log_bytes,
       s.n_dead_tup AS dead_rows, s.vacuum_count AS vacuums, s.autovacuum_count AS autovacuums,
       -- The server's checkpoints so far and its WAL position (bytes): whether a stall follows a checkpoint.
       (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter) AS checkpoints,
       pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint AS wal_bytes
FROM pg_stat_user_tables AS s WHERE s.relname = 'pgqd_jobs'
"""
INDEXES = """
SELECT c.relname AS name, pg_relation_size(c.oid) AS bytes
FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid
WHERE i.indrelid = 'pgqd_jobs'::regclass ORDER BY c.relname
"""
# A row finished within this long of a sample may not be in the log yet (outcomes are flushed in batches):
# each sample counts the window that ended this long before it.
LOG_LAG = datetime.timedelta(seconds=2)


def machine_cpu() -> tuple[float, float]:
    """The machine's busy and total CPU seconds since boot, over all cores (from /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    total = sum(fields) / os.sysconf("SC_CLK_TCK")
    return total - (fields[3] + fields[4]) / os.sysconf("SC_CLK_TCK"), total


class CpuShares:
    """Where the machine's CPU went between marks: to the producer (this process, which enqueues, and its
    connection's server process) or to everything else (the daemon and the server processes serving it), as
    shares of all cores. On a small machine the producer takes its CPU from the daemon: a load of 150 % of the
    capacity is enqueued with CPU the capacity drain had."""

    def __init__(self, producer_pids: list[int]) -> None:
        self.producer_pids = producer_pids
        self.readings: dict[str, tuple[float, float, float]] = {}

    def mark(self, name: str) -> None:
        busy, total = machine_cpu()
        self.readings[name] = (busy, total, sum(cpu_times(self.producer_pids).values()))

    def between(self, start: str, end: str) -> dict[str, float]:
        (busy0, total0, producer0), (busy1, total1, producer1) = self.readings[start], self.readings[end]
        total = total1 - total0
        if total <= 0:
            return {}  # within one tick of the kernel's clock: nothing to share out
        producer = producer1 - producer0
        return {
            "producer_share": round(producer / total, 3),
            "others_share": round((busy1 - busy0 - producer) / total, 3),
            "idle_share": round(1 - (busy1 - busy0) / total, 3),
        }


def rss_bytes(pid: int) -> int | None:
    """A process's resident memory, from /proc (None when it is gone or on another host)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return None


async def window(conn: Any, start: datetime.datetime, end: datetime.datetime) -> dict[str, Any]:
    """Jobs finished in (start, end]: how many, per second, and the waits' p50, p99 and longest in ms."""
    row = await conn.fetchrow(FINISHED_IN, start, end)
    seconds = (end - start).total_seconds()
    ms = {k: None if row[k] is None else round(float(row[k]) * 1000, 1) for k in ("p50", "p99", "longest")}
    return {"finished": row["finished"], "per_s": round(row["finished"] / seconds, 1) if seconds > 0 else None,
            "wait_p50_ms": ms["p50"], "wait_p99_ms": ms["p99"], "wait_max_ms": ms["longest"],
            "first_start": row["first_start"], "last_finish": row["last_finish"]}  # fmt: skip


async def sample(conn: Any, since: datetime.datetime, now: datetime.datetime) -> dict[str, Any]:
    """The queue, the tables and the worker processes now; the jobs finished in (since, now], lagged."""
    finished = await window(conn, since - LOG_LAG, now - LOG_LAG)
    table = dict(await conn.fetchrow(TABLE))
    indexes = {row["name"]: row["bytes"] for row in await conn.fetch(INDEXES)}
    rss = [rss_bytes(pid) for pid in await conn.fetchval("SELECT array_agg(pid) FROM pgqd_workers") or []]
    known = [r for r in rss if r is not None]
    return {
        "finished_per_s": finished["per_s"],
        "wait_p50_ms": finished["wait_p50_ms"],
        "wait_p99_ms": finished["wait_p99_ms"],
        **table,
        "indexes_bytes": indexes,
        "worker_rss_mb": [round(r / 2**20, 1) for r in known],
    }


def daemon_log(path: Path) -> dict[str, Any]:
    """From the daemon's JSON log: its vacuums of the jobs table (how many, how long) and its warnings and errors
    by event."""
    took: list[float] = []
    problems: dict[str, int] = {}
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == "vacuumed the jobs table":
            took.append(float(entry.get("took_s", 0.0)))
        elif entry.get("level") in ("warning", "error", "critical"):
            problems[str(entry.get("event"))] = problems.get(str(entry.get("event")), 0) + 1
    took.sort()
    lengths = {"median": took[len(took) // 2], "max": took[-1], "total": round(sum(took), 1)} if took else {}
    return {"vacuums": len(took), "vacuum_took_s": lengths, "warnings_and_errors": problems}
