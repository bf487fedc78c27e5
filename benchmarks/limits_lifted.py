"""What the limits cost the entrypoints they do not concern, apart from the work of the jobs they let run.

    .venv/bin/python -m benchmarks.limits_lifted [--processes 1 2] [--batch 10 100] [--jobs 100000] [--runs 3]

compare.py's realistic ratio sets the unlimited entrypoints' drain beside the same drain without the limited
entrypoints and their jobs, so it counts the limited jobs' own work (a few milliseconds of a slow service each,
holding a slot, and a record of the run) with whatever the limits cost. This runs pgqd's realistic drain three
ways, alternated: with its limits; with the same entrypoints, jobs and handlers and the limits lifted; and
without the limited entrypoints. Where ``limited`` is at or above ``lifted``, the limits cost the other
entrypoints nothing that lifting them would give back: what separates either from ``unlimited only`` is the slow
jobs' work, and ``slow runs`` says how many of them ran within the drain.
"""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks import realistic
from benchmarks.common import environment, parser, report, run_until_signalled
from benchmarks.systems import SYSTEMS

VARIANTS = ("limited", "lifted", "unlimited only")


async def one_drain(variant: str, server: str, jobs: int, processes: int, batch: int, cap: float) -> dict[str, float]:
    if variant == "lifted":
        return await realistic.lifted_drain(server, jobs, processes, batch, cap)
    limited = variant == "limited"
    result = await realistic.realistic_drain(SYSTEMS["pgqd"], server, jobs, processes, batch, cap, limited)
    result["slow runs"] = sum(value for key, value in result.items() if key.endswith(" runs"))
    return result


async def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batch", type=int, nargs="+", default=[10, 100])
    p.add_argument("--jobs", type=int, default=100_000)
    p.add_argument("--drain-cap", type=float, default=30.0, help="longest drain, in seconds")
    args = p.parse_args()
    drains: dict[tuple[int, int, str], list[dict[str, float]]] = {}
    for _ in range(args.runs):
        for processes in args.processes:
            for batch in args.batch:
                for variant in VARIANTS:
                    drain = await one_drain(variant, args.server, args.jobs, processes, batch, args.drain_cap)
                    drains.setdefault((processes, batch, variant), []).append(drain)
    results: list[dict[str, Any]] = []
    for processes in args.processes:
        for batch in args.batch:
            rate = {v: statistics.median(d["jobs_per_s"] for d in drains[(processes, batch, v)]) for v in VARIANTS}
            slow = {v: statistics.median(d["slow runs"] for d in drains[(processes, batch, v)]) for v in VARIANTS}
            results.append(
                {
                    "processes": processes,
                    "batch": batch,
                    "limited_jobs_per_s": round(rate["limited"]),
                    "lifted_jobs_per_s": round(rate["lifted"]),
                    "unlimited_only_jobs_per_s": round(rate["unlimited only"]),
                    "limited_over_lifted": round(rate["limited"] / rate["lifted"], 3),
                    "limited_over_unlimited_only": round(rate["limited"] / rate["unlimited only"], 3),
                    "lifted_over_unlimited_only": round(rate["lifted"] / rate["unlimited only"], 3),
                    "slow_runs_limited": round(slow["limited"]),
                    "slow_runs_lifted": round(slow["lifted"]),
                }
            )
    report("limits_lifted", results, await environment(args.server), args.json)


if __name__ == "__main__":
    run_until_signalled(main())
