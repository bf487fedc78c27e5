"""``pgqd dashboard``: a live terminal view of queue depth, paused entrypoints, throughput, failures and workers."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from pgqd.backend.statement_bounds import no_answer, timed_out
from pgqd.cli.connect import add_connection_arguments, command_connection, names_from
from pgqd.errors import ConfigError
from pgqd.ops.stats import QueueStats

CLEAR = "\x1b[H\x1b[2J"


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "dashboard",
        help="live view of queues, throughput, failures and workers",
        description="Live view of queue depth and age, throughput over 1 and 5 minutes, failures and workers.",
    )
    add_connection_arguments(parser)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes (default 2)")
    parser.add_argument("--limit", type=int, default=20, help="rows per section at most (default 20)")
    parser.add_argument("--once", action="store_true", help="print one snapshot and exit")
    parser.add_argument("--json", action="store_true", help="print snapshots as JSON (one line each)")
    parser.set_defaults(handler=dashboard)


async def snapshot(stats: QueueStats) -> dict[str, Any]:
    queues, throughput, workers = await stats.queues(), await stats.throughput(), await stats.workers()
    return {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "queues": [{**asdict(q), "oldest_eligible_age": q.oldest_eligible_age} for q in queues],
        "throughput": [asdict(t) for t in throughput],
        "workers": [asdict(w) for w in workers],
    }


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _table(title: str, header: list[str], rows: list[list[str]], limit: int) -> list[str]:
    shown = rows[:limit]
    widths = [max(len(h), *(len(r[i]) for r in shown)) if shown else len(h) for i, h in enumerate(header)]
    lines = [title, "  " + "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in shown]
    if not rows:
        lines.append("  (none)")
    elif len(rows) > limit:
        lines.append(f"  ... {len(rows) - limit} more")
    return lines


def render(snap: dict[str, Any], limit: int) -> str:
    queue_rows = [
        [
            q["entrypoint"],
            *(str(q[column]) for column in ("queued", "deferred", "waiting", "suspects", "running", "held")),
            _age(q["oldest_eligible_age"]),
            "paused" if q["paused"] else "",
        ]
        for q in snap["queues"]
    ]
    rates: dict[str, dict[str, list[int]]] = {}
    for t in snap["throughput"]:
        rates.setdefault(t["entrypoint"], {})[t["status"]] = [t["last_1m"], t["last_5m"]]
    rate_rows = []
    for name, statuses in sorted(rates.items()):
        done = [sum(v[i] for v in statuses.values()) for i in (0, 1)]
        bad = [sum(v[i] for s, v in statuses.items() if s in ("exception", "timeout")) for i in (0, 1)]
        rate_rows.append([name, f"{done[0] / 60:.1f}/s", f"{done[1] / 300:.1f}/s", str(bad[0]), str(bad[1])])
    worker_rows = [
        [w["host"], str(w["pid"]), str(w["running"]), _age(w["silent_for"]) + " ago", ",".join(w["entrypoints"])]
        for w in snap["workers"]
    ]
    lines = [f"pgqd dashboard  {snap['at']}", ""]
    lines += _table(
        "Queues",
        ["entrypoint", "queued", "deferred", "waiting", "suspects", "running", "held", "oldest eligible", "state"],
        queue_rows,
        limit,
    )
    lines.append("")
    lines += _table("Throughput", ["entrypoint", "1m", "5m", "failed 1m", "failed 5m"], rate_rows, limit)
    lines.append("")
    lines += _table("Workers", ["host", "pid", "running", "heartbeat", "entrypoints"], worker_rows, limit)
    return "\n".join(lines)


def _say_no_answer(text: str, args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps({"error": text}), flush=True)
        return
    sys.stdout.write(f"{CLEAR}{text}\nLooking again every {args.interval:g}s.\n")
    sys.stdout.flush()


async def dashboard(args: argparse.Namespace) -> int:
    if args.interval <= 0 or args.limit < 1:
        raise ConfigError("--interval must be positive and --limit at least 1")
    async with command_connection(args) as conn:
        stats = QueueStats(conn, names_from(args), read_side=True)
        while True:
            try:
                snap = await snapshot(stats)
            except Exception as exc:
                # A live view outlasts a slow moment of the database: it says so and looks again.
                if args.once or not args.db_timeout or not timed_out(exc):
                    raise
                _say_no_answer(no_answer(exc, args.db_timeout), args)
                await asyncio.sleep(args.interval)
                continue
            if args.json:
                print(json.dumps(snap, default=str), flush=True)
            else:
                text = render(snap, args.limit)
                sys.stdout.write(text + "\n" if args.once else CLEAR + text + "\n")
                sys.stdout.flush()
            if args.once:
                return 0
            await asyncio.sleep(args.interval)
