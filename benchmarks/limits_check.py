"""Whether a drain kept its limited entrypoints' limits, from the runs their handlers recorded.

- Concurrency: the most runs of one entrypoint that shared an instant, from the handlers' start and end on this
  machine's clock. A job's slot is freed when its outcome is written, after its handler ended, and the next job
  is claimed after that, so its handler starts later still: with the limit kept, the count never exceeds it.
- Rate: a token bucket of ``rate`` a second and as many in a burst allows at most ``rate * (t2 - t1) + rate``
  claims between t1 and t2. The claims' times are the database's (the job's ``picked_at``), the clock the bucket
  is kept on; the excess is the most claims in any such window beyond that bound (0 or less: kept).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.runners.mix import Entrypoint

# Floating-point slack on the bound, in jobs: far below one job, so a single job too many still shows.
SLACK = 1e-6


@dataclass(frozen=True)
class Run:
    entrypoint: str
    started: float
    ended: float
    claimed: float


def read_runs(path: Path) -> list[Run]:
    if not path.exists():
        return []
    runs = []
    for line in path.read_text().splitlines():
        name, started, ended, claimed = line.split()
        runs.append(Run(name, float(started), float(ended), float(claimed)))
    return runs


def max_overlap(intervals: Sequence[tuple[Any, Any]]) -> int:
    """The most [start, end) intervals that share an instant; an end and a start at the same instant do not."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = highest = 0
    for _, step in events:
        running += step
        highest = max(highest, running)
    return highest


def rate_excess(claimed: list[float], rate: float, burst: float) -> float:
    """The most claims in any window [t1, t2] beyond ``burst + rate * (t2 - t1)``; minus the burst if none."""
    # For a window ending at claim j, the best start i <= j maximises rate * t_i - i: kept as the scan goes.
    worst, best_start = -burst, float("-inf")
    for last, at in enumerate(sorted(claimed)):
        best_start = max(best_start, rate * at - last)
        worst = max(worst, last + 1 - burst - rate * at + best_start)
    return worst


def figures(mix: tuple[Entrypoint, ...], runs: list[Run]) -> dict[str, float]:
    """Per limited entrypoint of ``mix``: its runs, and the most at once (concurrency) or the excess (rate)."""
    found: dict[str, float] = {}
    for e in mix:
        if not e.limited:
            continue
        mine = [r for r in runs if r.entrypoint == e.name]
        found[f"{e.name} runs"] = len(mine)
        if e.concurrency_limit:
            found[f"{e.name} most at once"] = max_overlap([(r.started, r.ended) for r in mine])
        if e.rate_per_s:
            found[f"{e.name} excess"] = rate_excess([r.claimed for r in mine], e.rate_per_s, e.rate_per_s)
    return found


def verdicts(mix: tuple[Entrypoint, ...], runs_by_system: dict[str, list[dict[str, float]]]) -> list[dict[str, object]]:
    """Over every run of each system: whether each limit held, and whether it was ever used in full."""
    found: list[dict[str, object]] = []
    for system, runs in runs_by_system.items():
        for e in mix:
            if e.concurrency_limit and all(f"{e.name} most at once" in r for r in runs):
                most = max(r[f"{e.name} most at once"] for r in runs)
                found.append({"system": system, "entrypoint": e.name, "limit": f"concurrency {e.concurrency_limit}",
                              "observed": f"at most {most:.0f} at once", "held": most <= e.concurrency_limit,
                              "used_in_full": most == e.concurrency_limit,
                              "runs": sum(r[f"{e.name} runs"] for r in runs)})  # fmt: skip
            if e.rate_per_s and all(f"{e.name} excess" in r for r in runs):
                excess = round(max(r[f"{e.name} excess"] for r in runs), 3) + 0.0  # no "-0.000"
                found.append({"system": system, "entrypoint": e.name, "limit": f"rate {e.rate_per_s:g}/s",
                              "observed": f"{excess:+.3f} jobs beyond the bucket's bound at most",
                              "held": excess <= SLACK, "used_in_full": excess > -1,
                              "runs": sum(r[f"{e.name} runs"] for r in runs)})  # fmt: skip
    return found
