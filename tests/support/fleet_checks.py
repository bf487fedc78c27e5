"""The invariants of the fleet drills, judged from what the handlers recorded (``fleet_runs``) and from the log.

Nothing here reads pgqd's internal statuses beyond "is the job still in the queue": the checks hold however
a dead worker's jobs are brought back.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class Run:
    run_id: int
    job_id: int
    entrypoint: str
    host: str
    claimed_at: datetime | None
    started: datetime
    ended: datetime | None
    tick: str | None


@dataclass(frozen=True)
class Fault:
    """One drill on one host, in database time; ``kill`` drills end the runs that were under way on the host."""

    kind: str
    host: str
    began: datetime
    ended: datetime


def most_in_window(moments: Sequence[datetime], window: float) -> int:
    """The most moments inside any closed window of ``window`` seconds."""
    ordered = sorted(moments)
    span = timedelta(seconds=window)
    most = first = 0
    for last, moment in enumerate(ordered):
        while ordered[first] < moment - span:
            first += 1
        most = max(most, last - first + 1)
    return most


def run_intervals(runs: Sequence[Run], faults: Sequence[Fault]) -> tuple[list[tuple[datetime, datetime]], list[Run]]:
    """Each run's [start, end): a run without an end was under way when its host was killed, and ended then.

    Returns the intervals and the runs that have no end and no kill to explain it (each one is a violation).
    """
    kills = [f for f in faults if f.kind == "kill"]
    intervals, unexplained = [], []
    for run in runs:
        end = run.ended
        if end is None:
            end = next((k.began for k in kills if k.host == run.host and k.began >= run.started), None)
        if end is None:
            unexplained.append(run)
        else:
            intervals.append((run.started, end))
    return intervals, unexplained


def tick_report(runs: Sequence[Run], queued_ticks: dict[int, str], created: dict[int, datetime]) -> dict[str, Any]:
    """Every tick between the first and the last one fired exactly once (one job per tick, no tick missing), and
    none before its time by the database's clock (``created``: when each job was enqueued)."""
    jobs_per_tick: dict[str, set[int]] = defaultdict(set)
    for run in runs:
        if run.tick is not None:
            jobs_per_tick[run.tick].add(run.job_id)
    for job_id, tick in queued_ticks.items():
        jobs_per_tick[tick].add(job_id)
    fired_twice = sorted(t for t, jobs in jobs_per_tick.items() if len(jobs) > 1)
    moments = sorted(datetime.fromisoformat(t) for t in jobs_per_tick)
    missing = []
    for earlier, later in itertools.pairwise(moments):
        step = earlier + timedelta(seconds=1)
        while step < later:
            missing.append(step.isoformat())
            step += timedelta(seconds=1)
    early = sorted(
        tick
        for tick, jobs in jobs_per_tick.items()
        for job in jobs
        if job in created and created[job] < datetime.fromisoformat(tick)
    )
    return {"ticks": len(moments), "fired_twice": fired_twice, "missing": missing, "fired_early": early}


def rerun_report(runs: Sequence[Run], faults: Sequence[Fault]) -> dict[str, Any]:
    """Runs that did not decide their job's outcome, each explained by a fault on its host, and how soon after the
    fault began the job ran again. A job that ran again with no fault to explain it is a violation."""
    by_job: dict[int, list[Run]] = defaultdict(list)
    for run in runs:
        by_job[run.job_id].append(run)
    per_fault: dict[int, list[float]] = defaultdict(list)
    dropped_outcomes: dict[int, int] = defaultdict(int)
    unexplained = []
    for job_runs in by_job.values():
        job_runs.sort(key=lambda r: r.run_id)
        for run, following in itertools.pairwise(job_runs):
            index = _fault_of(run, faults)
            if index is None:
                unexplained.append(run.job_id)
                continue
            per_fault[index].append((following.started - faults[index].began).total_seconds())
            if run.ended is not None:
                dropped_outcomes[index] += 1
    return {"per_fault": per_fault, "dropped_outcomes": dropped_outcomes, "unexplained_reruns": sorted(unexplained)}


def _fault_of(run: Run, faults: Sequence[Fault]) -> int | None:
    """The fault that explains why ``run`` did not decide its job: one on its host, under way while it ran."""
    for index, fault in enumerate(faults):
        if fault.host == run.host and run.started <= fault.ended and (run.ended is None or run.ended >= fault.began):
            return index
    return None


def decided_by_last_run(runs: Sequence[Run], results: dict[int, Any]) -> list[int]:
    """Jobs whose logged outcome is not that of their last run (a late outcome that was kept): must be none."""
    last: dict[int, int] = {}
    for run in runs:
        last[run.job_id] = max(last.get(run.job_id, 0), run.run_id)
    wrong = []
    for job_id, result in results.items():
        kept = result.get("run") if isinstance(result, dict) else None
        if job_id in last and kept != last[job_id]:
            wrong.append(job_id)
    return sorted(wrong)
