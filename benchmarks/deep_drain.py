"""A deep queue drained by the daemon with and without its vacuum of the jobs table, interleaved.

    .venv/bin/python -m benchmarks.deep_drain [--jobs 300000] [--processes 2] [--batch 100] [--runs 3]

Each run drains ``--jobs`` pre-queued no-op jobs twice, in fresh databases: once in the default configuration,
where the lead worker vacuums the jobs table once claimed jobs have left enough dead rows
(pgqd/daemon/worker/vacuum.py),
and once with ``[database] vacuum_jobs = false``; which comes first alternates from run to run. It prints both
rates and the CPU per job of the database's server processes (the vacuums' included; read from /proc, so the
server must run on this machine), their ratios, and how many vacuums ran. The rate is jobs divided by the time
from the first job's start to the last job's finish, as the log records them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from benchmarks.common import environment, fresh_database, median_of, parser, report, run_until_signalled
from benchmarks.daemon import running_daemon
from benchmarks.drain import fill, measured_rate, wait_for_log
from benchmarks.profile_drain import BACKENDS, cpu_times, used

WITHOUT_VACUUM = "\n[database]\nvacuum_jobs = false\n"
VACUUMS = "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'pgqd_jobs'"


async def drain(server: str, jobs: int, processes: int, batch: int, vacuum: bool) -> Drained:
    async with fresh_database(server) as dsn:
        await fill(dsn, jobs)
        conn = await asyncpg.connect(dsn)
        try:
            before = int(await conn.fetchval(VACUUMS))
            async with running_daemon(dsn, processes, batch, extra="" if vacuum else WITHOUT_VACUUM):
                backends = [r["pid"] for r in await conn.fetch(BACKENDS)]
                cpu_before = cpu_times(backends)
                await wait_for_log(dsn, jobs, timeout=900)
                backends += [r["pid"] for r in await conn.fetch(BACKENDS)]
                server_cpu = used(cpu_before, cpu_times(sorted(set(backends))))
            vacuums = int(await conn.fetchval(VACUUMS)) - before
        finally:
            await conn.close()
        return Drained(await measured_rate(dsn, jobs), server_cpu / jobs * 1e6, vacuums)


@dataclass
class Drained:
    jobs_per_s: float
    server_us_per_job: float  # CPU of the database's server processes, the vacuums' included
    vacuums: int


def ratio(a: float, b: float) -> float:
    """a / b; 0 when b is (a drain too short for the CPU clock's ticks)."""
    return round(a / b, 2) if b else 0.0


async def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--jobs", type=int, default=300_000)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--batch", type=int, default=100)
    args = p.parse_args()
    drains: dict[bool, list[Drained]] = {True: [], False: []}
    for run in range(args.runs):
        for vacuum in (True, False) if run % 2 == 0 else (False, True):
            drains[vacuum].append(await drain(args.server, args.jobs, args.processes, args.batch, vacuum))
    rate = {v: median_of([d.jobs_per_s for d in runs]) for v, runs in drains.items()}
    server = {v: median_of([d.server_us_per_job for d in runs]) for v, runs in drains.items()}
    result: dict[str, Any] = {
        "jobs": args.jobs, "processes": args.processes, "batch": args.batch,
        "jobs_per_s_with_vacuum": rate[True], "jobs_per_s_without": rate[False],
        "rate_ratio": ratio(rate[True], rate[False]),
        "server_us_per_job_with_vacuum": server[True], "server_us_per_job_without": server[False],
        "server_cpu_ratio": ratio(server[True], server[False]),
        "vacuums_per_drain": [d.vacuums for d in drains[True]],
        "runs_with_vacuum": [round(d.jobs_per_s) for d in drains[True]],
        "runs_without": [round(d.jobs_per_s) for d in drains[False]],
    }  # fmt: skip
    report("deep drain", [result], await environment(args.server), args.json)


if __name__ == "__main__":
    run_until_signalled(main())
