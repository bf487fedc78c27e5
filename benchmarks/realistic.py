"""compare.py's scenarios with several entrypoints, some limited (benchmarks/runners/mix.py), one run each.

- ``realistic_drain``: the realistic mix of eight entrypoints, 10 % of the jobs on the three limited ones, or the
  same without its limited entrypoints and their jobs. The rate is that of the five unlimited entrypoints' jobs,
  the drain ends when they are done, and the limited ones' records say whether their limits held.
- ``idle_limit_drain``: pgqd draining one entrypoint's jobs beside three entrypoints with nothing queued, one of
  them limited or not: what a limit costs the claims of the entrypoints it does not concern.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks import limits_check
from benchmarks.common import concurrency_for
from benchmarks.realistic_report import ALL_JOBS_FIELD, FIELD
from benchmarks.runners.mix import (
    IDLE_MIXES,
    REALISTIC,
    REALISTIC_LIMITS_LIFTED,
    REALISTIC_UNLIMITED_ONLY,
    RECORDS_ENV,
    Entrypoint,
    job_counts,
)
from benchmarks.scenarios import drain_of
from benchmarks.systems import SYSTEMS, Mix, System

MEASURED = [e.name for e in REALISTIC if not e.limited]


def served_by(system: System, mix: Mix) -> Mix:
    """The mix as ``system`` can serve it: without a rate limit, a rate-limited entrypoint is served unlimited
    (and is given no jobs, see ``realistic_counts``)."""
    if system.has_rate_limit:
        return mix
    return tuple(Entrypoint(e.name, e.concurrency_limit) if e.rate_per_s else e for e in mix)


def realistic_counts(system: System, jobs: int, limited: bool) -> dict[str, int]:
    """Jobs per entrypoint: the full mix's share whether its limited entrypoints are there or not, so that the
    unlimited ones get the same jobs in both runs; none for a limit the system does not have."""
    counts = job_counts(REALISTIC, jobs)
    kept = {e.name for e in (REALISTIC if limited else REALISTIC_UNLIMITED_ONLY)}
    unsupported = {e.name for e in REALISTIC if e.rate_per_s and not system.has_rate_limit}
    return {name: (0 if name in unsupported else count) for name, count in counts.items() if name in kept}


# The realistic drain's loads: its mix with its limits, the same jobs with the limits lifted (pgqd only), or
# without the limited entrypoints and their jobs.
LOADS = ("realistic", "lifted", "unlimited-only")


def drain_load(system: System, jobs: int, load: str) -> tuple[Mix, dict[str, int]]:
    """The entrypoints ``system`` serves in the drain ``load`` (one of LOADS), and the jobs per entrypoint."""
    if load == "lifted":
        return REALISTIC_LIMITS_LIFTED, job_counts(REALISTIC, jobs)
    limited = load == "realistic"
    return served_by(system, REALISTIC if limited else REALISTIC_UNLIMITED_ONLY), realistic_counts(
        system, jobs, limited
    )


async def realistic_drain(
    system: System, server: str, jobs: int, processes: int, batch: int, cap: float, limited: bool = True
) -> dict[str, float]:
    mix, counts = drain_load(system, jobs, "realistic" if limited else "unlimited-only")
    result, runs, (first_start, last_end) = await recorded_drain(system, server, counts, mix, processes, batch, cap)
    result.update(limits_check.figures(mix, runs))
    # The drain is rated over its unlimited jobs' span; the limited jobs run within it count as work done too (the
    # records are on this machine's clock, the span on the database's: the same machine's).
    within = sum(1 for run in runs if first_start <= run.started and run.ended <= last_end)
    result[ALL_JOBS_FIELD] = result[FIELD] * (1 + within / result["finished"])
    return result


async def lifted_drain(server: str, jobs: int, processes: int, batch: int, cap: float) -> dict[str, float]:
    """pgqd draining the realistic mix's jobs with their handlers and without its limits: the unlimited entrypoints'
    rate, and how many of the slow jobs (the limited entrypoints' handler) ran."""
    mix, counts = drain_load(SYSTEMS["pgqd"], jobs, "lifted")
    result, runs, _ = await recorded_drain(SYSTEMS["pgqd"], server, counts, mix, processes, batch, cap)
    result["slow runs"] = len(runs)
    return result


async def recorded_drain(
    system: System, server: str, counts: dict[str, int], mix: Mix, processes: int, batch: int, cap: float
) -> tuple[dict[str, float], list[limits_check.Run], tuple[float, float]]:
    """The drain of ``counts`` with ``mix`` served, rated on the unlimited entrypoints; the slow jobs' runs (all of
    them, some after the span rated); and that span."""
    with tempfile.TemporaryDirectory() as folder:
        records = Path(folder) / "records"
        result, span = await drain_of(
            system, server, counts, MEASURED, processes, batch, concurrency_for(batch), cap, mix,
            {RECORDS_ENV: str(records)},
        )  # fmt: skip
        return result, limits_check.read_runs(records), span


async def idle_limit_drain(
    server: str, jobs: int, processes: int, batch: int, cap: float, variant: str
) -> dict[str, float]:
    mix = IDLE_MIXES[variant]
    counts = job_counts(mix, jobs, has_jobs=("noop",))
    result, _ = await drain_of(
        SYSTEMS["pgqd"], server, counts, ["noop"], processes, batch, concurrency_for(batch), cap, mix
    )
    return result
