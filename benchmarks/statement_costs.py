"""Where the server's time goes in a drain of the realistic mix, statement by statement.

    .venv/bin/python -m benchmarks.statement_costs [--processes 2] [--batch 10] [--jobs 100000] [--rounds 1]

On a private cluster (benchmarks/private_cluster.py) with ``pg_stat_statements`` tracking nested statements too
(so the statements inside the claim function count one by one), it runs compare.py's realistic drain with and
without the limited entrypoints (benchmarks/realistic.py), alternating, and after each prints the statements that
took the most time: calls, total and mean time, how often it was planned and the time planning took (a statement
planned at every call looks cheap on execution time alone), rows. The times are wall-clock: a busier machine
inflates them all, so read calls and rows first, and times against the other run's. JSON to ``--output`` when given.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks import realistic
from benchmarks.common import run_until_signalled
from benchmarks.private_cluster import private_cluster
from benchmarks.systems import SYSTEMS

SETTINGS = {
    "shared_preload_libraries": "pg_stat_statements",
    "pg_stat_statements.track": "all",
    # Planning too: a statement planned anew at every call (a custom plan) looks cheap on execution time alone.
    "pg_stat_statements.track_planning": "on",
    "autovacuum": "on",
}
TOP = """
SELECT calls, total_exec_time AS total_ms, total_plan_time AS plan_ms, plans, rows,
       left(regexp_replace(query, '\\s+', ' ', 'g'), $1) AS statement
FROM pg_stat_statements ORDER BY total_exec_time + total_plan_time DESC LIMIT $2
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--processes", type=int, default=2, help="worker processes (2)")
    p.add_argument("--batch", type=int, default=10, help="claim batch (10)")
    p.add_argument("--jobs", type=int, default=100_000, help="jobs of the mix (100,000)")
    p.add_argument("--rounds", type=int, default=1, help="pairs of drains (1)")
    p.add_argument("--top", type=int, default=12, help="statements shown per drain (12)")
    p.add_argument("--width", type=int, default=100, help="characters of each statement shown (100)")
    p.add_argument("--drain-cap", type=float, default=60.0, help="longest drain, in seconds (60)")
    p.add_argument("--output", type=Path, help="JSON file")
    return p.parse_args(argv)


async def execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def top_statements(dsn: str, width: int, top: int) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        return [dict(row) for row in await conn.fetch(TOP, width, top)]
    finally:
        await conn.close()


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    drains: list[dict[str, Any]] = []
    with private_cluster(SETTINGS) as dsn:
        await execute(dsn, "CREATE EXTENSION pg_stat_statements")
        for _ in range(args.rounds):
            for limited in (False, True):
                await execute(dsn, "SELECT pg_stat_statements_reset()")
                figures = await realistic.realistic_drain(
                    SYSTEMS["pgqd"], dsn, args.jobs, args.processes, args.batch, args.drain_cap, limited
                )
                drain = {"limited": limited, "figures": figures,
                         "statements": await top_statements(dsn, args.width, args.top)}  # fmt: skip
                drains.append(drain)
                print_drain(drain)
    return drains


def print_drain(drain: dict[str, Any]) -> None:
    rate = drain["figures"]["jobs_per_s"]
    print(f"{'with' if drain['limited'] else 'without'} the limited entrypoints: unlimited jobs at {rate:,.0f}/s")
    print("| calls | total (ms) | per call (µs) | plans | planning (ms) | rows | statement |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in drain["statements"]:
        per_call = 1000 * row["total_ms"] / max(row["calls"], 1)
        statement = row["statement"].replace("|", "\\|")
        print(
            f"| {row['calls']:,} | {row['total_ms']:,.1f} | {per_call:,.1f} | {row['plans']:,} | {row['plan_ms']:,.1f} "
            f"| {row['rows']:,} | `{statement}` |"
        )
    print(flush=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    drains = run_until_signalled(run(args))
    if args.output:
        args.output.write_text(json.dumps({"benchmark": "statement_costs", "settings": vars(args) | {"output": None},
                                           "drains": drains}, indent=2, default=str))  # fmt: skip


if __name__ == "__main__":
    main()
