"""The producer API: enqueue jobs, cancel or requeue them, read their state and wait for them to finish."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from pgqd.backend.base import ProducerBackend, Subscription
from pgqd.dependencies import dependent_steps
from pgqd.errors import DedupeConflict, JobNotFound, PgqdError
from pgqd.identifiers import Names
from pgqd.models import (
    ON_CONFLICT_CHOICES,
    PAUSE_ALL,
    CancelResult,
    Event,
    JobLinks,
    JobState,
    NewJob,
    OnConflict,
    ParentFailurePolicy,
    PauseState,
    PlainJobs,
    WorkflowView,
)
from pgqd.payload import encode_headers, encode_payload
from pgqd.producers.targets import async_backend
from pgqd.tracing import trace_headers

if TYPE_CHECKING:
    from pgqd.workflow import Workflow, WorkflowRun

_INT32 = 2**31 - 1


@dataclass(frozen=True)
class JobSpec:
    """One job for ``Client.enqueue_many``; the fields mean what ``Client.enqueue``'s arguments mean."""

    entrypoint: str
    payload: Any = None
    priority: int = 0
    execute_after: timedelta | datetime | None = None
    dedupe_key: str | None = None
    headers: Mapping[str, Any] | None = None
    # Jobs (ids) this one waits for, and what it does when one of them ends unsuccessfully (docs/workflows.md).
    after: Iterable[int] | None = None
    on_parent_failure: ParentFailurePolicy | None = None

    # Written out because bulk producers build one per job: the generated __init__ of a frozen dataclass sets each
    # field through object.__setattr__, which takes more than twice as long (~0.46 against ~0.2 ms per 1,000
    # jobs). Same parameters and defaults as the fields above; tests/test_enqueue.py checks that they agree.
    def __init__(
        self,
        entrypoint: str,
        payload: Any = None,
        priority: int = 0,
        execute_after: timedelta | datetime | None = None,
        dedupe_key: str | None = None,
        headers: Mapping[str, Any] | None = None,
        after: Iterable[int] | None = None,
        on_parent_failure: ParentFailurePolicy | None = None,
    ) -> None:
        fields = self.__dict__  # item by item: a keyword update() would build a dict of its own first (~25 % more)
        fields["entrypoint"] = entrypoint
        fields["payload"] = payload
        fields["priority"] = priority
        fields["execute_after"] = execute_after
        fields["dedupe_key"] = dedupe_key
        fields["headers"] = headers
        fields["after"] = after
        fields["on_parent_failure"] = on_parent_failure


def build_job(spec: JobSpec, trace: Mapping[str, str] | None = None) -> NewJob:
    """Validates one job request and encodes it for storage; ``trace`` headers (the producer's span) are added."""
    entrypoint, priority, dedupe_key, when = spec.entrypoint, spec.priority, spec.dedupe_key, spec.execute_after
    if not isinstance(entrypoint, str) or not entrypoint:
        raise PgqdError(f"entrypoint must be a non-empty str, got {entrypoint!r}")
    if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > _INT32:
        raise PgqdError(f"priority must be an int between -{_INT32} and {_INT32}, got {priority!r}")
    if dedupe_key is not None and not isinstance(dedupe_key, str):
        raise PgqdError(f"dedupe_key must be a str or None, got {type(dedupe_key).__name__}")
    if when is None and spec.headers is None and not trace:
        # Most jobs of a bulk enqueue: nothing more to check or encode (half the time of the general case).
        return NewJob(entrypoint, encode_payload(spec.payload), priority, 0.0, None, dedupe_key)
    delay = 0.0
    at: datetime | None = None
    if isinstance(when, timedelta):
        delay = max(when.total_seconds(), 0.0)
    elif isinstance(when, datetime):
        if when.tzinfo is None or when.utcoffset() is None:
            raise PgqdError(
                f"execute_after={when!r} is a naive datetime, which is ambiguous: pass an aware datetime "
                "(e.g. datetime.now(timezone.utc) + timedelta(minutes=5)) or a timedelta"
            )
        at = when
    elif when is not None:
        raise PgqdError(f"execute_after must be a timedelta or an aware datetime, got {type(when).__name__}")
    return NewJob(
        entrypoint=entrypoint,
        payload=encode_payload(spec.payload),
        priority=priority,
        delay=delay,
        execute_after=at,
        dedupe_key=dedupe_key,
        headers=encode_headers({**trace, **(spec.headers or {})} if trace else spec.headers),
    )


def prepare_batch(
    jobs: Iterable[JobSpec | Mapping[str, Any]], on_conflict: OnConflict
) -> tuple[Sequence[NewJob], list[int | None]]:
    """Validates and encodes the jobs of one enqueue call and settles dedupe keys repeated among them; returns
    what ``fold_duplicate_keys`` returns."""
    if on_conflict not in ON_CONFLICT_CHOICES:
        raise PgqdError(f"on_conflict must be one of {', '.join(ON_CONFLICT_CHOICES)}, got {on_conflict!r}")
    # One trace context for the batch: every job of one call is enqueued inside the same span.
    trace = trace_headers()
    specs = list(jobs)
    plain = None if trace else plain_jobs(specs)
    if plain is not None:
        return plain, list(range(len(plain)))
    built = [build_job(as_spec(job), trace) for job in specs]
    return fold_duplicate_keys(built, on_conflict)


_ENTRYPOINT, _PAYLOAD, _PRIORITY = attrgetter("entrypoint"), attrgetter("payload"), attrgetter("priority")
_EXTRAS = attrgetter("execute_after", "dedupe_key", "headers", "after", "on_parent_failure")


def plain_jobs(specs: list[Any]) -> PlainJobs | None:
    """The jobs as columns, when each is a JobSpec of nothing but a valid entrypoint, a payload and a priority;
    None otherwise, and ``build_job`` then checks each job and names what is wrong.

    Column by column, each question is asked once of a whole column (~0.15 ms per 1,000 jobs instead of ~0.4).
    """
    if len(specs) < 2 or set(map(type, specs)) != {JobSpec}:
        return None
    try:
        extras = set(map(_EXTRAS, specs))
    except TypeError:  # unhashable headers: they are not plain
        return None
    if len(extras) != 1 or any(value is not None for value in extras.pop()):
        return None
    entrypoints: list[str] = list(map(_ENTRYPOINT, specs))
    if set(map(type, entrypoints)) != {str} or "" in entrypoints:
        return None
    priorities: list[int] = list(map(_PRIORITY, specs))
    if set(map(type, priorities)) != {int} or min(priorities) < -_INT32 or max(priorities) > _INT32:
        return None
    payloads = [p if p.__class__ is bytes else encode_payload(p) for p in map(_PAYLOAD, specs)]
    return PlainJobs(entrypoints, payloads, priorities)


def in_input_order(ids: Sequence[int | None], position: Sequence[int | None]) -> list[int | None]:
    """The id of each input job, from the ids of the jobs sent and ``prepare_batch``'s positions."""
    return [None if index is None else ids[index] for index in position]


def settled(state: JobState) -> bool:
    """Whether ``wait`` is over for a job: it reached a final status, or is held as failed."""
    return state.finished or state.status == "failed"


def poll_pauses(longest: float) -> Iterator[float]:
    """Pauses between looks at a job's state: short at first (most waits are short), then ``longest``."""
    pause = min(0.02, longest)
    while True:
        yield pause
        pause = min(pause * 2, longest)


def fold_duplicate_keys(jobs: Sequence[NewJob], on_conflict: OnConflict) -> tuple[list[NewJob], list[int | None]]:
    """Settles dedupe keys repeated inside one batch before the database sees it.

    Returns the jobs to send and, for each input position, the index of the sent job that stands for it (None
    where the job is skipped). ``raise`` refuses the batch, ``skip`` keeps the first, ``raise_priority`` keeps
    the first with the highest priority asked for.
    """
    if [job.dedupe_key for job in jobs].count(None) == len(jobs):
        return list(jobs), list(range(len(jobs)))
    first_by_key: dict[str, int] = {}
    sent: list[NewJob] = []
    position: list[int | None] = []
    repeated: list[str] = []
    for job in jobs:
        key = job.dedupe_key
        if key is None or key not in first_by_key:
            if key is not None:
                first_by_key[key] = len(sent)
            position.append(len(sent))
            sent.append(job)
            continue
        index = first_by_key[key]
        if on_conflict == "raise":
            repeated.append(key)
        elif on_conflict == "skip":
            position.append(None)
        else:
            if job.priority > sent[index].priority:
                sent[index] = sent[index]._replace(priority=job.priority)
            position.append(index)
    if repeated:
        raise DedupeConflict(sorted(set(repeated)))
    return sent, position


class _FinishWatch:
    """One subscription shared by every ``wait`` of a client; wakes the waiters of finished job ids."""

    def __init__(self) -> None:
        self._waiters: dict[int, set[asyncio.Event]] = {}
        self.subscription: Subscription | None = None

    def on_event(self, event: Event) -> None:
        if event.kind == "finished":
            for job_id in event.ids:
                for woken in self._waiters.get(job_id, ()):
                    woken.set()
        elif event.kind == "reconnected":
            for waiters in self._waiters.values():
                for woken in waiters:
                    woken.set()

    @contextlib.contextmanager
    def watching(self, job_id: int) -> Iterator[asyncio.Event]:
        woken = asyncio.Event()
        self._waiters.setdefault(job_id, set()).add(woken)
        try:
            yield woken
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(woken)
                if not waiters:
                    del self._waiters[job_id]


class Client:
    """Enqueues and manages jobs.

    ``target`` is an asyncpg Connection or Pool, a psycopg 3 AsyncConnection or AsyncConnectionPool, a
    SQLAlchemy AsyncConnection, AsyncSession or AsyncEngine, or any ``Backend`` such as ``pgqd.MemoryBackend``
    for tests without a database. On a connection or session, an enqueue joins the transaction open there;
    on a pool or engine, each call commits by itself. ``pgqd.SyncClient`` is the blocking twin.
    """

    def __init__(
        self,
        target: Any,
        *,
        schema: str = "public",
        prefix: str = "pgqd_",
        wait_poll_interval: float = 1.0,
    ) -> None:
        self.backend: ProducerBackend = async_backend(target, Names(schema, prefix))
        self._wait_poll_interval = wait_poll_interval
        self._watch: _FinishWatch | None = None
        self._watch_lock = asyncio.Lock()

    async def enqueue(
        self,
        entrypoint: str,
        payload: Any = None,
        *,
        priority: int = 0,
        execute_after: timedelta | datetime | None = None,
        dedupe_key: str | None = None,
        headers: Mapping[str, Any] | None = None,
        on_conflict: OnConflict = "raise",
        after: Iterable[int] | None = None,
        on_parent_failure: ParentFailurePolicy | None = None,
    ) -> int | None:
        """Stores one job and returns its id (None when ``on_conflict="skip"`` skipped it).

        ``payload``: bytes as is, str as UTF-8, anything else as JSON. ``execute_after``: a timedelta (counted on
        the database clock) or an aware datetime. ``dedupe_key``: at most one queued or running job holds a key;
        on a clash ``on_conflict`` says what to do: ``raise`` DedupeConflict, ``skip``, or ``raise_priority`` of
        the existing job (its id is returned). ``after``: ids of jobs this one waits for; it becomes claimable
        when the last of them succeeds. ``on_parent_failure``: ``cancel`` (default), ``run`` or ``hold`` when
        one of them ends otherwise (docs/workflows.md).
        """
        spec = JobSpec(entrypoint, payload, priority, execute_after, dedupe_key, headers, after, on_parent_failure)
        return (await self.enqueue_many([spec], on_conflict=on_conflict))[0]

    async def enqueue_many(
        self, jobs: Iterable[JobSpec | Mapping[str, Any]], *, on_conflict: OnConflict = "raise"
    ) -> list[int | None]:
        """Stores many jobs in one statement, all or nothing; ids come back in input order."""
        specs = jobs if isinstance(jobs, list) else list(jobs)
        sent, position = prepare_batch(specs, on_conflict)
        steps = dependent_steps(specs, sent, on_conflict)
        if steps is not None:
            return list((await self.backend.enqueue_steps(steps, None, False)).ids)
        return in_input_order(await self.backend.enqueue(sent, on_conflict), position)

    async def enqueue_workflow(self, workflow: Workflow) -> WorkflowRun:
        """Stores every step of a workflow in one statement, all or nothing; returns the workflow's id and each
        step's job id."""
        stored = await self.backend.enqueue_steps(workflow.new_steps(), workflow.name, True)
        return workflow.run_of(stored)

    async def workflow(self, workflow_id: int) -> WorkflowView | None:
        """Every step of a workflow with its status now and its parents; None for an unknown workflow."""
        return await self.backend.workflow(workflow_id)

    async def links(self, job_id: int) -> JobLinks:
        """A job's parents and children with their status, and its workflow."""
        return await self.backend.job_links(job_id)

    async def cancel_workflow(self, workflow_id: int) -> CancelResult:
        """Cancels every step of the workflow that has not ended (running ones are told to stop)."""
        return await self.backend.cancel_workflow(workflow_id)

    async def cancel(self, ids: int | Iterable[int]) -> CancelResult:
        """Waiting and held jobs are logged as canceled at once; running jobs are told to stop (their handler
        is cancelled, or ``ctx.cancelled`` set for a plain function) and logged as canceled when they do."""
        return await self.backend.cancel(id_list(ids))

    async def delete(self, ids: int | Iterable[int]) -> CancelResult:
        """Like ``cancel``, but the log records the jobs as deleted (an operator's clean-up)."""
        return await self.backend.cancel(id_list(ids), status="deleted")

    async def requeue(self, ids: int | Iterable[int]) -> list[int]:
        """Puts held (failed) jobs back in the queue with a fresh attempt budget; returns the ids requeued."""
        return await self.backend.requeue(id_list(ids))

    async def status(self, ids: int | Iterable[int]) -> dict[int, JobState]:
        """The state of each job found, live or finished; unknown ids are absent from the result."""
        return await self.backend.job_states(id_list(ids))

    async def pause(self, *entrypoints: str, all: bool = False) -> PauseState:
        """Stops every worker, on every host, from claiming jobs of these entrypoints until they are resumed;
        ``all=True`` pauses every entrypoint, those that have no job yet included. Takes effect at each worker's
        next claim (well within a second); running jobs finish and enqueueing still works. The pause is stored
        in the database (inside the caller's transaction, if one is open). Returns what is paused now."""
        await self.backend.pause(pause_targets(entrypoints, all, "pause"))
        return await self.backend.pauses()

    async def resume(self, *entrypoints: str, all: bool = False) -> PauseState:
        """Undoes ``pause``: these entrypoints (``all=True``: every one) run again, and idle workers are woken
        to claim at once. Resuming one entrypoint while all are paused exempts it from that pause."""
        await self.backend.resume(pause_targets(entrypoints, all, "resume"))
        return await self.backend.pauses()

    async def paused(self) -> PauseState:
        """What is paused now; ``.is_paused(name)`` answers for one entrypoint."""
        return await self.backend.pauses()

    async def wait(self, job_id: int, timeout: float | None = None) -> JobState:
        """Waits until the job reaches a final status (or is held as failed) and returns that state.

        Raises TimeoutError after ``timeout`` seconds, JobNotFound for an unknown id.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        watch = await self._finish_watch()
        with watch.watching(job_id) as woken:
            await self.backend.watch_finished(job_id)
            for pause in poll_pauses(self._wait_poll_interval):
                state = (await self.backend.job_states([job_id])).get(job_id)
                if state is None:
                    raise JobNotFound(job_id)
                if settled(state):
                    return state
                if deadline is not None:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        raise TimeoutError(f"job {job_id} did not finish within {timeout}s (now {state.status})")
                    pause = min(pause, remaining)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), pause)
                woken.clear()
        raise AssertionError("unreachable: poll_pauses never ends")

    async def _finish_watch(self) -> _FinishWatch:
        async with self._watch_lock:
            if self._watch is None:
                watch = _FinishWatch()
                watch.subscription = await self.backend.subscribe(watch.on_event)
                self._watch = watch
            return self._watch

    async def close(self) -> None:
        """Stops listening for finished jobs (the connection or pool itself stays the caller's)."""
        watch, self._watch = self._watch, None
        if watch is not None and watch.subscription is not None:
            await watch.subscription.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()


def as_spec(job: JobSpec | Mapping[str, Any]) -> JobSpec:
    if isinstance(job, JobSpec):
        return job
    if isinstance(job, Mapping):
        unknown = set(job) - set(JobSpec.__dataclass_fields__)
        if unknown:
            raise PgqdError(f"unknown job field(s) {', '.join(sorted(unknown))}")
        try:
            return JobSpec(**job)
        except TypeError as exc:
            raise PgqdError(f"invalid job {dict(job)!r}: {exc}") from exc
    raise PgqdError(f"each job must be a JobSpec or a mapping, got {type(job).__name__}")


def pause_targets(entrypoints: Sequence[str], everything: bool, verb: str) -> list[str] | None:
    """The entrypoints named, or None for all of them; refuses both, neither, and names that are not names."""
    if everything:
        if entrypoints:
            raise PgqdError(f"{verb}: name entrypoints or pass all=True, not both")
        return None
    if not entrypoints:
        raise PgqdError(f"{verb}: name at least one entrypoint, or pass all=True")
    for name in entrypoints:
        if not isinstance(name, str) or not name.strip():
            raise PgqdError(f"{verb}: entrypoint names must be non-empty strings, got {name!r}")
        if name == PAUSE_ALL:
            raise PgqdError(f"{verb}: {PAUSE_ALL!r} is not an entrypoint name; pass all=True for every entrypoint")
    return list(dict.fromkeys(entrypoints))


def id_list(ids: int | Iterable[int]) -> list[int]:
    if isinstance(ids, int):
        return [ids]
    return [int(i) for i in ids]
