"""``pgqd enqueue`` (put a job on the queue from the shell) and ``pgqd schedules``."""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from typing import Any

from pgqd.backend.postgres import PostgresBackend
from pgqd.cli.connect import add_connection_arguments, command_connection, names_from
from pgqd.client import Client
from pgqd.daemon.worker.scheduler import describe
from pgqd.errors import ConfigError
from pgqd.units import parse_duration


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "enqueue",
        help="enqueue one job",
        description="Enqueue one job. PAYLOAD is stored as given (UTF-8 text; JSON if the handler calls job.json()).",
    )
    add_connection_arguments(parser)
    parser.add_argument("entrypoint", help="entrypoint name, as in the [entrypoints] section of the config")
    parser.add_argument("payload", nargs="?", help='job payload, e.g. \'{"to": "a@example.com"}\'')
    parser.add_argument("--priority", type=int, default=0, help="higher runs first (default 0)")
    parser.add_argument("--delay", help='run no earlier than this from now, e.g. "30s", "5m"')
    parser.add_argument("--dedupe-key", help="refuse the job while another live job holds this key")
    parser.add_argument("--count", type=int, default=1, help="enqueue this many copies (default 1)")
    parser.set_defaults(handler=enqueue)


async def enqueue(args: argparse.Namespace) -> int:
    delay = None
    if args.delay:
        try:
            delay = timedelta(seconds=parse_duration(args.delay))
        except ValueError as exc:
            raise ConfigError(f"--delay: {exc}") from None
    if args.count < 1:
        raise ConfigError("--count must be at least 1")
    names = names_from(args)
    jobs = [
        {
            "entrypoint": args.entrypoint,
            "payload": args.payload,
            "priority": args.priority,
            "execute_after": delay,
            "dedupe_key": args.dedupe_key,
        }
        for _ in range(args.count)
    ]
    async with command_connection(args) as conn:
        ids = await Client(conn, schema=names.schema, prefix=names.prefix).enqueue_many(jobs)
    for job_id in ids:
        print(job_id)
    return 0


def register_schedules(commands: Any) -> None:
    parser = commands.add_parser(
        "schedules",
        help="list cron schedules with their next and last runs",
        description="List the schedules stored in the database: cron, time zone, next run, last run and outcome.",
    )
    add_connection_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=list_schedules)


async def list_schedules(args: argparse.Namespace) -> int:
    names = names_from(args)
    async with command_connection(args) as conn:
        states = await PostgresBackend(conn, names).schedule_states()
    rows = describe(states)
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no schedules (add [schedules.NAME] sections to the config and start the daemon)")
    else:
        print(format_table(rows))
    return 0


def format_table(rows: list[dict[str, str]]) -> str:
    keys = list(rows[0])
    widths = [max(len(key), *(len(row[key]) for row in rows)) for key in keys]
    lines = ["  ".join(key.ljust(width) for key, width in zip(keys, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(row[key].ljust(width) for key, width in zip(keys, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines)
