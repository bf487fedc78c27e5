"""Cost growth: the drain rate of 10,000 jobs with 0, 100,000 and 1,000,000 ineligible jobs in the table,
either deferred to the future or queued for an entrypoint the daemon does not serve.

    .venv/bin/python -m benchmarks.growth [--jobs 10000] [--ineligible 0 100000 1000000] [--kind deferred other]
"""

from __future__ import annotations

import itertools
from typing import Any

import asyncpg

from benchmarks.common import environment, fresh_database, median_of, parser, report, run_until_signalled
from benchmarks.drain import drain_with_daemon

# Setup, not the measured path: rows go in with one INSERT ... SELECT rather than through the client.
INELIGIBLE = {
    "deferred": """
        INSERT INTO pgqd_jobs (entrypoint, status, execute_after)
        SELECT 'noop', 'deferred', now() + interval '1 day' + g * interval '1 ms' FROM generate_series(1, $1) AS g
    """,
    "other": """
        INSERT INTO pgqd_jobs (entrypoint, priority) SELECT 'not_served', (g % 10) FROM generate_series(1, $1) AS g
    """,
}


async def one_run(server: str, jobs: int, ineligible: int, kind: str, processes: int, batch: int) -> float:
    async with fresh_database(server) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            if ineligible:
                await conn.execute(INELIGIBLE[kind], ineligible)
        finally:
            await conn.close()
        return await drain_with_daemon(dsn, jobs, batch, processes)


async def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--ineligible", type=int, nargs="+", default=[0, 100_000, 1_000_000])
    p.add_argument("--kind", choices=sorted(INELIGIBLE), nargs="+", default=["deferred", "other"])
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--batch", type=int, default=10)
    args = p.parse_args()
    results: list[dict[str, Any]] = []
    baseline: dict[str, float] = {}
    cases = list(itertools.product(args.kind, args.ineligible))
    # Rounds over every case rather than all runs of one case in a row: the machine's speed drifts over minutes,
    # and interleaving keeps that drift out of the comparison with the empty table.
    rates: dict[tuple[str, int], list[float]] = {case: [] for case in cases}
    for _ in range(args.runs):
        for kind, count in cases:
            rates[kind, count].append(await one_run(args.server, args.jobs, count, kind, args.processes, args.batch))
    for kind, count in cases:
        runs = rates[kind, count]
        rate = median_of(runs)
        baseline.setdefault(kind, rate)
        results.append(
            {"kind": kind, "ineligible": count, "jobs": args.jobs, "jobs_per_s": rate,
             "vs_empty": f"{rate / baseline[kind]:.0%}", "runs": [round(r) for r in runs]}
        )  # fmt: skip
    report("cost growth", results, await environment(args.server), args.json)


if __name__ == "__main__":
    run_until_signalled(main())
