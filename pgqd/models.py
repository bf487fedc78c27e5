"""Plain data passed between the client, the worker engine and the storage backends."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple, overload

OnConflict = Literal["raise", "skip", "raise_priority"]
ON_CONFLICT_CHOICES: tuple[OnConflict, ...] = ("raise", "skip", "raise_priority")

LiveStatus = Literal["queued", "deferred", "suspect", "picked", "failed", "waiting"]
LIVE_STATUSES: tuple[LiveStatus, ...] = ("queued", "deferred", "suspect", "picked", "failed", "waiting")
# The largest job id (a bigint): a larger one names no job, and is refused before it reaches the database.
MAX_JOB_ID = 2**63 - 1
# Django tasks: each Django queue is served as the entrypoint "django.<queue>", run by pgqd's own task runner.
DJANGO_ENTRYPOINT_PREFIX = "django."
FinalStatus = Literal["successful", "exception", "canceled", "deleted", "timeout"]
FINAL_STATUSES: tuple[FinalStatus, ...] = ("successful", "exception", "canceled", "deleted", "timeout")


class NewJob(NamedTuple):
    """A job as a producer asks for it, already encoded.

    A named tuple rather than a frozen dataclass: bulk enqueue builds one per job, and this is three times
    cheaper to build.

    ``delay`` is counted on the database's clock (so producers with a skewed clock still defer correctly);
    ``execute_after`` is an absolute, timezone-aware time and wins over ``delay`` when both are set.
    """

    entrypoint: str
    payload: bytes | None = None
    priority: int = 0
    delay: float = 0.0
    execute_after: datetime | None = None
    dedupe_key: str | None = None
    headers: str | None = None


ParentFailurePolicy = Literal["cancel", "run", "hold"]
PARENT_FAILURE_POLICIES: tuple[ParentFailurePolicy, ...] = ("cancel", "run", "hold")


class NewStep(NamedTuple):
    """A job that may wait for others, as ``enqueue_steps`` stores it. ``after``: its parents, each the id of an
    existing job (positive) or ``-n`` for the n-th step (1-based) of the same call. ``step``: its name in a
    workflow. ``on_parent_failure``: None means cancel."""

    job: NewJob
    after: tuple[int, ...] = ()
    on_parent_failure: ParentFailurePolicy | None = None
    step: str | None = None


class PlainJobs(Sequence[NewJob]):
    """The jobs of one enqueue call, column by column, when they carry nothing but an entrypoint, a payload and a
    priority: no delay, time, dedupe key or headers. Most bulk enqueues are such.

    The columns are what the statement sends. Building a NewJob per job and taking them apart again cost more
    than the rest of the producer's work, and the garbage collector's passes over those objects came on top.
    Read as a sequence, it gives the NewJobs it stands for.
    """

    __slots__ = ("entrypoints", "payloads", "priorities")

    def __init__(self, entrypoints: list[str], payloads: list[bytes | None], priorities: list[int]) -> None:
        self.entrypoints = entrypoints
        self.payloads = payloads
        self.priorities = priorities

    def __len__(self) -> int:
        return len(self.entrypoints)

    @overload
    def __getitem__(self, index: int) -> NewJob: ...

    @overload
    def __getitem__(self, index: slice) -> list[NewJob]: ...

    def __getitem__(self, index: int | slice) -> NewJob | list[NewJob]:
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        return NewJob(self.entrypoints[index], self.payloads[index], self.priorities[index])

    def __iter__(self) -> Iterator[NewJob]:
        return map(NewJob, self.entrypoints, self.payloads, self.priorities)


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    type: str
    message: str
    traceback: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"type": self.type, "message": self.message, "traceback": self.traceback}


@dataclass(frozen=True, slots=True)
class JobState:
    """Where a job is now: live (queued, deferred, suspect, picked, failed) or finished (a final status from the
    log). ``suspect``: it was running in two worker deaths, and it waits to run alone (see docs/reliability.md).
    ``payload``: a live job's payload; a finished job's only if its entrypoint keeps payloads (``keep_payload``)."""

    id: int
    entrypoint: str
    status: LiveStatus | FinalStatus
    attempts: int
    priority: int
    created_at: datetime
    finished_at: datetime | None = None
    error: ErrorInfo | None = None
    result: Any = None
    payload: bytes | None = None

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


@dataclass(frozen=True, slots=True)
class CancelResult:
    """``canceled``: jobs that were waiting and are now logged as canceled. ``signalled``: running jobs whose
    worker was asked to stop them (they are logged as canceled when it does). Ids in neither were not live."""

    canceled: list[int]
    signalled: list[int]


@dataclass(frozen=True, slots=True)
class EntrypointLimit:
    """The fleet-wide limits of one entrypoint, as the claim needs them. 0 means no limit.

    ``max_worker_deaths`` and ``hold_failures`` (its death budget and ``on_failure = "hold"``) are stamped on a
    suspect claimed to run alone, so that whoever rescues its worker can give it up once it killed its worker
    alone that many times."""

    name: str
    concurrency: int = 0
    rate_per_second: float = 0.0
    burst: float = 0.0
    max_worker_deaths: int = 3
    hold_failures: bool = False

    @property
    def limited(self) -> bool:
        return self.concurrency > 0 or self.rate_per_second > 0


# Not frozen, like the outcomes below: a frozen dataclass sets each field through object.__setattr__, which made
# building these, one per job, five times slower (3 us against 0.6 us each).
@dataclass(slots=True)
class ClaimedJob:
    id: int
    entrypoint: str
    payload: bytes | None
    headers: str | None
    priority: int
    attempts: int
    # Seconds since the epoch, on the database's clock: a float costs the driver a tenth of a datetime to decode.
    created_s: float
    execute_after_s: float
    picked_s: float
    cancel_requested: bool


@dataclass(frozen=True, slots=True)
class ClaimResult:
    """Claimed jobs, and when claiming again may find more: ``throttled_in`` seconds until a rate-limited
    entrypoint with waiting jobs has a token again; ``due_in`` seconds until the next deferred job is due
    (reported only when the claim came back short). ``suspects``: suspects of these entrypoints wait to run
    alone (reported by a claim that came back short, when none runs alone yet, and by an isolated claim).
    ``closed``: limited entrypoints of which the claim could take nothing, each with the seconds until it may
    (a rate limit's next token, another claim's hold on its limit row), or None until a notification names it
    (no claimable work, or its concurrency limit is reached); the worker leaves them out of its next claims.
    ``reached``: those of them closed because their concurrency limit is reached, which more jobs enqueued do not
    open (a freed slot does)."""

    jobs: list[ClaimedJob]
    throttled_in: float | None = None
    due_in: float | None = None
    suspects: bool = False
    closed: dict[str, float | None] = field(default_factory=dict)
    reached: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class HeartbeatReply:
    """``cancel``: running jobs of the worker that someone asked to cancel. ``suspects``: suspects of its
    entrypoints wait to run alone and none runs alone yet."""

    cancel: list[int]
    suspects: bool = False


@dataclass(slots=True)
class Finished:
    """A job's final outcome. Times are offsets from the moment it was picked, measured by the worker."""

    job_id: int
    status: FinalStatus
    started_after: float = 0.0
    duration: float = 0.0
    error: ErrorInfo | None = None
    result_json: str | None = None
    # The result of an entrypoint that does not store results: kept only if the job has children (workflows).
    handed_json: str | None = None


@dataclass(slots=True)
class Unfinished:
    """A picked job whose run ended without ending the job, which stays in the jobs table: ``retry`` (queued
    again after ``delay`` seconds, the attempt counted), ``hold`` (status failed, for an operator) or ``release``
    (queued again, as at a shutdown or recycling: the attempt is not counted)."""

    job_id: int
    kind: Literal["retry", "hold", "release"]
    delay: float = 0.0
    error: ErrorInfo | None = None


Outcome = Finished | Unfinished


@dataclass(frozen=True, slots=True)
class HandOver:
    """What a worker asks of the write of its outcomes: the slots of concurrency-limited entrypoints that jobs
    ending in it free, passed on to those entrypoints' next jobs for the same worker. ``wanted``: per entrypoint,
    the slots to pass on (more than the jobs of it that the write ends are not); ``concurrency``: its limit."""

    wanted: dict[str, int]
    concurrency: dict[str, int]


@dataclass(frozen=True, slots=True)
class Recorded:
    """What a write of outcomes did: ``applied`` outcomes of jobs the worker still owned, and the jobs it claimed
    for the worker in the slots handed over (``HandOver``)."""

    applied: int
    successors: list[ClaimedJob] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    host: str
    pid: int
    entrypoints: Sequence[str]


# The kinds of notice on the events channel (pgqd/sql/notices.py says what each carries).
NoticeKind = Literal["enqueued", "cancel", "finished", "slot"]


@dataclass(frozen=True, slots=True)
class Event:
    """A notification on the events channel.

    kind ``enqueued``: new jobs for ``entrypoints`` (empty = any), the earliest due in ``due_in`` seconds (None =
    now), the highest priority among them ``top_priority`` (None: unknown, or jobs put back with their old ids);
    ``cancel``: stop running jobs ``ids``; ``finished``: jobs ``ids`` reached a final status; ``slot``: a
    concurrency-limited job of ``entrypoints`` finished, so a waiting claim may succeed; ``reconnected``: the
    listener was down for a while and events may have been missed.
    """

    kind: NoticeKind | Literal["reconnected"]
    entrypoints: tuple[str, ...] = ()
    ids: tuple[int, ...] = ()
    due_in: float | None = None
    top_priority: int | None = None


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """One ``[schedules.NAME]`` section, ready to run."""

    name: str
    cron: str
    entrypoint: str
    payload: bytes | None = None
    priority: int = 0
    timezone: str = "UTC"
    enabled: bool = True
    misfire: str = "coalesce"


@dataclass(frozen=True, slots=True)
class ScheduleDefinition:
    """A schedule as the config defines it; ``first_run`` is its next tick, used when it is new or changed."""

    spec: ScheduleSpec
    first_run: datetime


@dataclass(frozen=True, slots=True)
class ScheduleState:
    name: str
    cron: str
    timezone: str
    entrypoint: str
    payload: bytes | None
    priority: int
    enabled: bool
    misfire: str
    next_run: datetime
    last_run: datetime | None
    last_job_id: int | None
    last_status: str | None


PAUSE_ALL = "*"


@dataclass(frozen=True, slots=True)
class PauseState:
    """What is paused fleet-wide. ``all_paused``: every entrypoint (``pause --all``), except those in ``excepted``
    (resumed on their own since); otherwise the entrypoints in ``paused``."""

    all_paused: bool = False
    paused: frozenset[str] = frozenset()
    excepted: frozenset[str] = frozenset()

    def is_paused(self, entrypoint: str) -> bool:
        if entrypoint in self.paused:
            return True
        return self.all_paused and entrypoint not in self.excepted

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[str, bool]]) -> PauseState:
        """From stored (entrypoint, paused) rows, where entrypoint ``*`` stands for every entrypoint."""
        stored = dict(rows)
        return cls(
            all_paused=stored.pop(PAUSE_ALL, False),
            paused=frozenset(name for name, paused in stored.items() if paused),
            excepted=frozenset(name for name, paused in stored.items() if not paused),
        )

    def as_dict(self) -> dict[str, Any]:
        return {"all_paused": self.all_paused, "paused": sorted(self.paused), "excepted": sorted(self.excepted)}


@dataclass(frozen=True, slots=True)
class StepsEnqueued:
    """What ``enqueue_steps`` stored: each step's job id in input order, and the workflow's id (None without)."""

    ids: list[int]
    workflow_id: int | None


@dataclass(frozen=True, slots=True)
class LinkedJob:
    """A parent or child of a job: its id, step name (in a workflow), entrypoint and status now (live or final;
    None once retention removed its log row)."""

    id: int
    step: str | None
    entrypoint: str | None
    status: str | None


@dataclass(frozen=True, slots=True)
class JobLinks:
    """A job's place in a workflow: the workflow it belongs to (None for ``after=`` alone), its parents and its
    children."""

    workflow_id: int | None
    parents: list[LinkedJob]
    children: list[LinkedJob]


@dataclass(frozen=True, slots=True)
class WorkflowStep:
    job_id: int
    step: str | None
    entrypoint: str | None
    status: str | None
    parents: list[int]


@dataclass(frozen=True, slots=True)
class WorkflowView:
    """Every step of a workflow with its status and its parents (the edges), in enqueue order."""

    id: int
    name: str | None
    created_at: datetime
    steps: list[WorkflowStep]

    def counts(self) -> dict[str, int]:
        """Steps per status."""
        counted: dict[str, int] = {}
        for step in self.steps:
            key = step.status or "pruned"
            counted[key] = counted.get(key, 0) + 1
        return counted

    @property
    def ended(self) -> bool:
        return not any(step.status in LIVE_STATUSES for step in self.steps)
