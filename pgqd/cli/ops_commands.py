"""Operator commands: ``pgqd jobs list|failed|requeue|cancel`` and ``pgqd grants``. Changes are recorded in the
action log."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from typing import Any

from pgqd.backend.postgres import PostgresBackend
from pgqd.cli.connect import add_connection_arguments, command_connection, names_from
from pgqd.cli.workflow_commands import register_show
from pgqd.errors import ConfigError
from pgqd.models import FINAL_STATUSES, LIVE_STATUSES
from pgqd.ops.action_log import Action, cli_actor, id_target, record
from pgqd.ops.stats import QueueStats
from pgqd.sql import bulk
from pgqd.sql.grants import grant_statements

# How often a long requeue says how far it got, on stderr.
PROGRESS_EVERY = 2.0


def register(commands: Any) -> None:
    jobs = commands.add_parser("jobs", help="list, requeue and cancel jobs", description="Inspect and manage jobs.")
    actions = jobs.add_subparsers(dest="action", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="list jobs", description="List live jobs, or finished ones by status.")
    add_connection_arguments(listing)
    listing.add_argument("--entrypoint", help="only this entrypoint")
    listing.add_argument("--status", choices=LIVE_STATUSES + FINAL_STATUSES, help="only this status")
    listing.add_argument("--limit", type=int, default=50, help="at most this many rows (default 50)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=list_jobs)

    failed = actions.add_parser("failed", help="list held (failed) jobs with their last error")
    add_connection_arguments(failed)
    failed.add_argument("--entrypoint", help="only this entrypoint")
    failed.add_argument("--limit", type=int, default=50, help="at most this many rows (default 50)")
    failed.add_argument("--json", action="store_true", help="print JSON")
    failed.set_defaults(handler=list_jobs, status="failed")

    requeue = actions.add_parser("requeue", help="requeue held jobs with a fresh attempt budget")
    add_connection_arguments(requeue)
    requeue.add_argument("ids", nargs="*", type=int, help="job ids")
    requeue.add_argument("--all-failed", action="store_true", help="every held job (of --entrypoint, if given)")
    requeue.add_argument("--entrypoint", help="with --all-failed: only this entrypoint")
    requeue.set_defaults(handler=requeue_jobs)

    cancel = actions.add_parser("cancel", help="cancel jobs (running ones are stopped)")
    add_connection_arguments(cancel)
    cancel.add_argument("ids", nargs="+", type=int, help="job ids")
    cancel.set_defaults(handler=cancel_jobs)

    register_show(actions)

    grants = commands.add_parser(
        "grants",
        help="print least-privilege GRANT statements",
        description="Print GRANT statements for a producer role (enqueue, status, wait, cancel) and a worker role.",
    )
    add_connection_arguments(grants, db_timeout=None)  # prints statements; connects to nothing
    grants.add_argument("--producer-role", help="role of the applications that enqueue")
    grants.add_argument("--worker-role", help="role the pgqd daemon connects as")
    grants.set_defaults(handler=print_grants)


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return str(value)


def print_rows(rows: list[dict[str, Any]], as_json: bool, empty: str) -> None:
    if as_json:
        print(json.dumps(rows, default=_text, indent=2))
        return
    if not rows:
        print(empty)
        return
    keys = [k for k in rows[0] if any(row[k] is not None for row in rows)]
    table = [[_text(row[k]) for k in keys] for row in rows]
    widths = [max(len(k), *(len(line[i]) for line in table)) for i, k in enumerate(keys)]
    print("  ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True)).rstrip())
    for line in table:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())


async def list_jobs(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise ConfigError("--limit must be at least 1")
    async with command_connection(args) as conn:
        rows = await QueueStats(conn, names_from(args), read_side=True).jobs(args.entrypoint, args.status, args.limit)
    print_rows(rows, args.json, "no jobs")
    return 0


async def requeue_jobs(args: argparse.Namespace) -> int:
    if bool(args.ids) == bool(args.all_failed):
        raise ConfigError("give job ids or --all-failed (not both)")
    names = names_from(args)
    async with command_connection(args) as conn:
        ids = args.ids or await QueueStats(conn, names, read_side=True).held_ids(args.entrypoint)
        requeued = await _requeue_in_batches(PostgresBackend(conn, names), ids)
        target = f"every held job{f' of {args.entrypoint}' if args.entrypoint else ''}" if args.all_failed else ""
        await record(
            conn, names, Action(cli_actor(), "cli", "requeue", target or id_target(ids), len(ids), len(requeued))
        )
    skipped = sorted(set(ids) - set(requeued))
    print(f"requeued {len(requeued)} job(s)" + (f": {', '.join(map(str, requeued))}" if requeued else ""))
    if skipped:
        print(f"not held, so not requeued: {', '.join(map(str, skipped))}", file=sys.stderr)
    return 0


async def _requeue_in_batches(backend: PostgresBackend, ids: list[int]) -> list[int]:
    """Requeues ``ids`` a batch per statement, each bounded by --db-timeout however many there are; says how far
    it got every few seconds when there are many."""
    requeued: list[int] = []
    told = time.monotonic()
    for start in range(0, len(ids), bulk.BATCH):
        requeued += await backend.requeue(ids[start : start + bulk.BATCH])
        if time.monotonic() - told >= PROGRESS_EVERY:
            print(f"requeued {len(requeued):,} of {len(ids):,} so far", file=sys.stderr, flush=True)
            told = time.monotonic()
    return requeued


async def cancel_jobs(args: argparse.Namespace) -> int:
    names = names_from(args)
    async with command_connection(args) as conn:
        result = await PostgresBackend(conn, names).cancel(args.ids)
        changed = len(result.canceled) + len(result.signalled)
        await record(conn, names, Action(cli_actor(), "cli", "cancel", id_target(args.ids), len(args.ids), changed))
    print(f"canceled {len(result.canceled)} waiting job(s), asked {len(result.signalled)} running job(s) to stop")
    missing = sorted(set(args.ids) - set(result.canceled) - set(result.signalled))
    if missing:
        print(f"not live (finished or unknown): {', '.join(map(str, missing))}", file=sys.stderr)
    return 0


async def print_grants(args: argparse.Namespace) -> int:
    if not args.producer_role and not args.worker_role:
        raise ConfigError("name --producer-role, --worker-role or both")
    try:
        statements = grant_statements(names_from(args), args.producer_role, args.worker_role)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    print("\n".join(statements))
    return 0
