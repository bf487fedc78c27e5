"""Enqueue rate through the public clients on every kind of producer target, side by side in one run:
batches of 1,000 (one statement each) and single jobs (one commit each), and each target's rate as a ratio to
asyncpg's measured in the same run. The targets take turns throughout the run (see ``one_run``).

.venv/bin/python -m benchmarks.enqueue [--jobs 50000] [--single 2000] [--runs 3] [--targets asyncpg psycopg ...]
"""

from __future__ import annotations

import contextlib
import functools
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from benchmarks.common import environment, fresh_database, median_of, parser, report, run_until_signalled
from benchmarks.enqueue_targets import BASELINE, TARGETS
from pgqd import JobSpec

WARM_UP_CALLS = 5  # psycopg prepares a statement on its fifth run; SQLAlchemy compiles and caches on the first
BATCHES_PER_TURN = 5
SINGLES_PER_TURN = 100


async def timed(calls: int, call: Callable[[], Awaitable[None]]) -> float:
    began = time.perf_counter()
    for _ in range(calls):
        await call()
    return time.perf_counter() - began


async def one_run(dsn: str, targets: list[str], jobs: int, batch: int, singles: int) -> dict[str, tuple[float, float]]:
    """Every target, taking turns: a few batches each, then a few single jobs each, over and over, so that
    whatever else the machine does at a given moment weighs on every target alike. The jobs table is emptied
    between turns."""
    specs = [JobSpec("bench", b"{}") for _ in range(batch)]
    admin = await asyncpg.connect(dsn)
    spent = {name: [0.0, 0.0] for name in targets}
    try:
        async with contextlib.AsyncExitStack() as stack:
            producers = {name: await stack.enter_async_context(TARGETS[name](dsn)) for name in targets}
            for producer in producers.values():
                await timed(WARM_UP_CALLS, functools.partial(producer.enqueue_many, specs))
                await timed(WARM_UP_CALLS, producer.enqueue)
            for turn in range(max(jobs // batch // BATCHES_PER_TURN, 1)):
                for name in _rotated(targets, turn):
                    await admin.execute("TRUNCATE pgqd_jobs")
                    batch_call = functools.partial(producers[name].enqueue_many, specs)
                    spent[name][0] += await timed(BATCHES_PER_TURN, batch_call)
            for turn in range(max(singles // SINGLES_PER_TURN, 1)):
                for name in _rotated(targets, turn):
                    spent[name][1] += await timed(min(SINGLES_PER_TURN, singles), producers[name].enqueue)
    finally:
        await admin.close()
    batched_jobs = max(jobs // batch // BATCHES_PER_TURN, 1) * BATCHES_PER_TURN * batch
    single_jobs = max(singles // SINGLES_PER_TURN, 1) * min(SINGLES_PER_TURN, singles)
    return {name: (batched_jobs / batched, single_jobs / one) for name, (batched, one) in spent.items()}


def _rotated(targets: list[str], turn: int) -> list[str]:
    shift = turn % len(targets)
    return targets[shift:] + targets[:shift]


async def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--jobs", type=int, default=50_000)
    p.add_argument("--batch", type=int, default=1_000)
    p.add_argument("--single", type=int, default=2_000)
    p.add_argument("--targets", nargs="+", choices=sorted(TARGETS), default=list(TARGETS))
    args = p.parse_args()
    targets = [BASELINE] + [t for t in args.targets if t != BASELINE]
    runs: list[dict[str, tuple[float, float]]] = []
    for _ in range(args.runs):
        async with fresh_database(args.server) as dsn:
            runs.append(await one_run(dsn, targets, args.jobs, args.batch, args.single))
    results: list[dict[str, Any]] = []
    for name in targets:
        batched_runs = [run[name][0] for run in runs]
        single_runs = [run[name][1] for run in runs]
        results.append({
            "target": name,
            f"batches_of_{args.batch}_jobs_per_s": median_of(batched_runs),
            "single_jobs_per_s": median_of(single_runs),
            # Ratios are taken within each run (the same minute on the same machine), then the median.
            "batched_vs_asyncpg": _ratio(runs, name, 0),
            "single_vs_asyncpg": _ratio(runs, name, 1),
            "batched_runs": [round(r) for r in batched_runs],
            "single_runs": [round(r) for r in single_runs],
        })  # fmt: skip
    report("enqueue", results, await environment(args.server), args.json)


def _ratio(runs: list[dict[str, tuple[float, float]]], name: str, column: int) -> float:
    return round(statistics.median(run[name][column] / run[BASELINE][column] for run in runs), 2)


if __name__ == "__main__":
    run_until_signalled(main())
