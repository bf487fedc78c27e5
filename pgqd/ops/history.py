"""The history of finished jobs over the last hour, day or week: per time slice and per entrypoint, how many jobs
ended how, and the percentiles of their run time and queue wait; and the running jobs beside what a run of their
entrypoint usually takes. SQL in ``pgqd.sql.history``; read-only, on an asyncpg connection or pool.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pgqd.identifiers import Names
from pgqd.sql.history import HistoryStatements

FAILED = ("exception", "timeout")
# Status filters of the history besides single final statuses.
STATUS_GROUPS = {"failed": FAILED}
CLASSES_PER_DOUBLING = 4


@dataclass(frozen=True)
class Span:
    """A range the history shows: its length, the width of its slices, and whether it reads the log itself (the
    last hour) or the hourly rollup."""

    name: str
    seconds: int
    slice_seconds: int
    from_log: bool


SPANS = {
    "1h": Span("1h", 3600, 60, True),
    "24h": Span("24h", 86400, 3600, False),
    "7d": Span("7d", 7 * 86400, 3 * 3600, False),
}


@dataclass(frozen=True)
class Percentiles:
    """Seconds; each within 9 % of the true value (durations are counted in classes, see pgqd.sql.history)."""

    p50: float
    p95: float
    p99: float
    jobs: int


@dataclass(frozen=True)
class Outcomes:
    succeeded: int = 0
    failed: int = 0  # exceptions and timeouts
    other: int = 0  # canceled and deleted

    @property
    def total(self) -> int:
        return self.succeeded + self.failed + self.other


@dataclass(frozen=True)
class Slice:
    start: datetime
    outcomes: Outcomes
    run: Percentiles | None
    wait: Percentiles | None


@dataclass(frozen=True)
class EntrypointHistory:
    entrypoint: str
    outcomes: Outcomes
    run: Percentiles | None
    wait: Percentiles | None


@dataclass(frozen=True)
class History:
    span: Span
    start: datetime
    end: datetime
    now: datetime
    slices: list[Slice]
    entrypoints: list[EntrypointHistory]
    # For a day or a week: when a daemon last rolled up the log (None: never).
    rolled_at: datetime | None = None


@dataclass(frozen=True)
class RunningJob:
    id: int
    entrypoint: str
    priority: int
    attempts: int
    created_at: datetime
    picked_at: datetime | None
    worker_id: int | None
    host: str | None
    pid: int | None
    running_for: float
    cancel_requested: bool
    isolated: bool
    # Seconds since the worker's last heartbeat: a worker silent for long may be dead or hung.
    worker_silent_for: float | None = None


def class_seconds(cls: int) -> float:
    """The middle of a duration class, in seconds (geometric, so within 9 % of any duration in it)."""
    return 0.001 * 2 ** ((cls + 0.5) / CLASSES_PER_DOUBLING)


def percentiles(histogram: Mapping[int, int]) -> Percentiles | None:
    total = sum(histogram.values())
    if total == 0:
        return None
    wanted = {0.5: 0.0, 0.95: 0.0, 0.99: 0.0}
    seen = 0
    pending = sorted(wanted)
    for cls in sorted(histogram):
        seen += histogram[cls]
        while pending and seen >= pending[0] * total:
            wanted[pending.pop(0)] = class_seconds(cls)
    return Percentiles(wanted[0.5], wanted[0.95], wanted[0.99], total)


def statuses_of(choice: str | None) -> list[str] | None:
    """The final statuses a history filter stands for (None: all)."""
    if not choice:
        return None
    return list(STATUS_GROUPS.get(choice, (choice,)))


class _Tally:
    """Outcome counts and the two histograms of one group of rows."""

    def __init__(self) -> None:
        self.by_status: dict[str, int] = defaultdict(int)
        self.histograms: tuple[dict[int, int], dict[int, int]] = (defaultdict(int), defaultdict(int))

    def add(self, status: str, measure: int, cls: int, jobs: int) -> None:
        if measure == 0:
            self.by_status[status] += jobs
        else:
            self.histograms[measure - 1][cls] += jobs

    def outcomes(self) -> Outcomes:
        failed = sum(self.by_status.get(s, 0) for s in FAILED)
        succeeded = self.by_status.get("successful", 0)
        return Outcomes(succeeded, failed, sum(self.by_status.values()) - succeeded - failed)

    def run(self) -> Percentiles | None:
        return percentiles(self.histograms[0])

    def wait(self) -> Percentiles | None:
        return percentiles(self.histograms[1])


@dataclass
class JobHistory:
    """The history queries for one install."""

    db: Any
    names: Names
    sql: HistoryStatements = field(init=False)

    def __post_init__(self) -> None:
        self.sql = HistoryStatements(self.names)

    async def history(self, span: Span, entrypoint: str | None = None, status: str | None = None) -> History:
        """Jobs that finished in the last ``span``, optionally of one entrypoint and one status (or "failed")."""
        now = await self._fetchval("SELECT now()")
        step = timedelta(seconds=span.slice_seconds)
        end = _floor(now, span.slice_seconds) + step
        start = end - timedelta(seconds=span.seconds)
        statement = self.sql.histograms_from_log if span.from_log else self.sql.histograms_from_rollup
        rows = await self._fetch(statement, start, end, float(span.slice_seconds), entrypoint, statuses_of(status))
        found = _history(span, start, end, now, rows)
        if span.from_log:
            return found
        return replace(found, rolled_at=await self.rolled_at())

    async def rolled_at(self) -> datetime | None:
        """When a daemon last rolled up the log (None: never)."""
        moment: datetime | None = await self._fetchval(self.sql.rolled_at)
        return moment

    async def running(self, entrypoint: str | None = None, limit: int = 500) -> list[RunningJob]:
        """Running jobs, longest-running first, with their worker's host and pid."""
        rows = await self._fetch(self.sql.running_jobs, entrypoint, limit)
        return [
            RunningJob(
                **{k: r[k] for k in RunningJob.__dataclass_fields__ if k not in ("running_for", "worker_silent_for")},
                running_for=float(r["running_for"] or 0.0),
                worker_silent_for=None if r["worker_silent_for"] is None else float(r["worker_silent_for"]),
            )
            for r in rows
        ]

    async def typical_run_times(self, entrypoints: Iterable[str], window: float = 3600.0) -> dict[str, Percentiles]:
        """Percentiles of the run times of the successful jobs of ``entrypoints`` that finished in the last
        ``window`` seconds (entrypoints without any are left out)."""
        names = sorted(set(entrypoints))
        if not names:
            return {}
        histograms: dict[str, dict[int, int]] = defaultdict(dict)
        for r in await self._fetch(self.sql.typical_run_times, float(window), names):
            histograms[r["entrypoint"]][r["class"]] = r["jobs"]
        found = {name: percentiles(h) for name, h in histograms.items()}
        return {name: p for name, p in found.items() if p is not None}

    async def _fetch(self, statement: str, *args: Any) -> list[Any]:
        rows: list[Any] = await self.db.fetch(statement, *args)
        return rows

    async def _fetchval(self, statement: str) -> Any:
        return await self.db.fetchval(statement)


def _floor(moment: datetime, seconds: int) -> datetime:
    epoch = moment.timestamp()
    return datetime.fromtimestamp(epoch - epoch % seconds, UTC)


def _history(span: Span, start: datetime, end: datetime, now: datetime, rows: Sequence[Any]) -> History:
    slices: dict[datetime, _Tally] = defaultdict(_Tally)
    entrypoints: dict[str, _Tally] = defaultdict(_Tally)
    for r in rows:
        tally = slices[r["slice_start"]] if r["per_slice"] else entrypoints[r["entrypoint"]]
        tally.add(r["status"], r["measure"], r["class"], r["jobs"])
    step = timedelta(seconds=span.slice_seconds)
    shown = []
    moment = start
    while moment < end:
        tally = slices.get(moment, _Tally())
        shown.append(Slice(moment, tally.outcomes(), tally.run(), tally.wait()))
        moment += step
    return History(
        span,
        start,
        end,
        now,
        shown,
        [EntrypointHistory(name, t.outcomes(), t.run(), t.wait()) for name, t in sorted(entrypoints.items())],
    )
