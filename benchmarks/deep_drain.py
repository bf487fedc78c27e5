"""A deep queue drained by the daemon with and without its vacuum of the jobs table, interleaved.

    .venv/bin/python -m benchmarks.deep_drain [--jobs 300000] [--processes 2] [--batch 100] [--runs 3]

Each run drains ``--jobs`` pre-queued no-op jobs twice, in fresh databases: once in the default configuration,
where the lead worker vacuums the jobs table once claimed jobs have left enough dead rows (pgqd/daemon/upkeep.py),
and once with ``[database] vacuum_jobs = false``; which comes first alternates from run to run. It prints both
rates, their ratio, and how many vacuums ran. The rate is jobs divided by the time from the first job's start to
the last job's finish, as the log records them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from benchmarks.common import environment, fresh_database, median_of, parser, report
from benchmarks.daemon import running_daemon
from benchmarks.drain import fill, measured_rate, wait_for_log

WITHOUT_VACUUM = "\n[database]\nvacuum_jobs = false\n"
VACUUMS = "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'pgqd_jobs'"


async def drain(server: str, jobs: int, processes: int, batch: int, vacuum: bool) -> tuple[float, int]:
    async with fresh_database(server) as dsn:
        await fill(dsn, jobs)
        conn = await asyncpg.connect(dsn)
        try:
            before = int(await conn.fetchval(VACUUMS))
            async with running_daemon(dsn, processes, batch, extra="" if vacuum else WITHOUT_VACUUM):
                await wait_for_log(dsn, jobs, timeout=900)
            vacuums = int(await conn.fetchval(VACUUMS)) - before
        finally:
            await conn.close()
        return await measured_rate(dsn, jobs), vacuums


async def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--jobs", type=int, default=300_000)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--batch", type=int, default=100)
    args = p.parse_args()
    rates: dict[bool, list[float]] = {True: [], False: []}
    vacuums: list[int] = []
    for run in range(args.runs):
        for vacuum in (True, False) if run % 2 == 0 else (False, True):
            rate, count = await drain(args.server, args.jobs, args.processes, args.batch, vacuum)
            rates[vacuum].append(rate)
            if vacuum:
                vacuums.append(count)
    with_vacuum, without = median_of(rates[True]), median_of(rates[False])
    result: dict[str, Any] = {
        "jobs": args.jobs, "processes": args.processes, "batch": args.batch,
        "jobs_per_s_with_vacuum": with_vacuum, "jobs_per_s_without": without,
        "ratio": round(with_vacuum / without, 2), "vacuums_per_drain": vacuums,
        "runs_with_vacuum": [round(r) for r in rates[True]], "runs_without": [round(r) for r in rates[False]],
    }  # fmt: skip
    report("deep drain", [result], await environment(args.server), args.json)


if __name__ == "__main__":
    asyncio.run(main())
