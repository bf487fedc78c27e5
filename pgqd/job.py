"""What a handler receives: the job, its context, and the exception that asks for a retry."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pgqd.errors import PgqdError
from pgqd.models import ClaimedJob


class InvalidPayload(PgqdError):
    """``Job.json()`` was called on a payload that is not valid JSON."""


def _as_datetime(value: datetime | float) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromtimestamp(value, UTC)


class Job:
    """One job as a handler sees it. ``attempts`` counts this run: it is 1 on the first try. ``created_at``,
    ``execute_after`` and ``picked_at`` are aware datetimes on the database's clock."""

    # A claimed job keeps its times as seconds since the epoch and makes datetimes of them when they are read:
    # decoding three timestamps per claimed row took the driver about 1 us a job, an eighth of a worker's whole
    # cost per job, and most handlers never look at them. A Job built by hand keeps the datetimes it was given.
    __slots__ = ("_created", "_due", "_picked", "attempts", "entrypoint", "headers", "id", "payload", "priority")

    def __init__(
        self,
        id: int,
        entrypoint: str,
        payload: bytes | None,
        priority: int,
        attempts: int,
        headers: dict[str, Any],
        created_at: datetime,
        execute_after: datetime,
        picked_at: datetime,
    ) -> None:
        self._set(id, entrypoint, payload, priority, attempts, headers)
        self._created: datetime | float = created_at
        self._due: datetime | float = execute_after
        self._picked: datetime | float = picked_at

    @classmethod
    def of_claim(cls, claimed: ClaimedJob, headers: dict[str, Any]) -> Job:
        """The job a claim returned, with its headers decoded; its times stay as the claim gave them until read."""
        job = cls.__new__(cls)
        job._set(claimed.id, claimed.entrypoint, claimed.payload, claimed.priority, claimed.attempts, headers)
        job._created, job._due, job._picked = claimed.created_s, claimed.execute_after_s, claimed.picked_s
        return job

    def _set(
        self, id: int, entrypoint: str, payload: bytes | None, priority: int, attempts: int, headers: dict[str, Any]
    ) -> None:
        self.id = id
        self.entrypoint = entrypoint
        self.payload = payload
        self.priority = priority
        self.attempts = attempts
        self.headers = headers

    @property
    def created_at(self) -> datetime:
        return _as_datetime(self._created)

    @property
    def execute_after(self) -> datetime:
        return _as_datetime(self._due)

    @property
    def picked_at(self) -> datetime:
        return _as_datetime(self._picked)

    def _fields(self) -> tuple[Any, ...]:
        return (
            self.id, self.entrypoint, self.payload, self.priority, self.attempts, self.headers,
            self.created_at, self.execute_after, self.picked_at,
        )  # fmt: skip

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable, as it was as a dataclass

    def __repr__(self) -> str:
        return (
            f"Job(id={self.id!r}, entrypoint={self.entrypoint!r}, payload={self.payload!r}, "
            f"priority={self.priority!r}, attempts={self.attempts!r}, headers={self.headers!r}, "
            f"created_at={self.created_at!r}, execute_after={self.execute_after!r}, picked_at={self.picked_at!r})"
        )

    def json(self) -> Any:
        """The payload decoded as JSON (None when there is no payload)."""
        if self.payload is None:
            return None
        try:
            return json.loads(self.payload)
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidPayload(f"job {self.id} ({self.entrypoint}): payload is not valid JSON: {exc}") from exc

    def text(self) -> str | None:
        """The payload decoded as UTF-8."""
        return None if self.payload is None else self.payload.decode("utf-8")


class CancelledFlag:
    """Set when the job is cancelled or timed out; readable from the event loop and from handler threads.

    The thread event behind ``wait_blocking`` is made only when a handler asks for it: most jobs never do, and
    the dispatch path makes one flag per job.
    """

    __slots__ = ("_event", "_lock", "_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._event: threading.Event | None = None
        self._lock = _FLAG_LOCK
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        with self._lock:
            self._set = True
            event, waiters, self._waiters = self._event, self._waiters, None
        if event is not None:
            event.set()
        for loop, waiter in waiters or ():
            loop.call_soon_threadsafe(_resolve, waiter)

    def wait_blocking(self, timeout: float | None = None) -> bool:
        """For plain ``def`` handlers running in a thread."""
        with self._lock:
            if self._set:
                return True
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return event.wait(timeout)

    async def wait(self) -> None:
        """For ``async def`` handlers that want to stop cooperatively."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._set:
                return
            if self._waiters is None:
                self._waiters = []
            self._waiters.append((loop, waiter))
        await waiter


# One lock for every flag: it is held for a few instructions, and a lock per job would cost more than it saves.
_FLAG_LOCK = threading.Lock()


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Context:
    """What a two-argument handler gets besides the job: ``resources`` (from the workers' resources factory),
    ``cancelled`` (set when the job is cancelled or times out), ``log`` (a logger bound to the job),
    ``worker_id`` (the id of the worker running it, as the log and the web UI show it) and, for a job that waited
    for others, their results (``await ctx.parent_results()``)."""

    __slots__ = ("_bind_log", "_fetch_parents", "_log", "_loop", "_parents", "cancelled", "resources", "worker_id")

    def __init__(
        self,
        resources: Any,
        log: Any = None,
        bind_log: Callable[[], Any] | None = None,
        worker_id: int = 0,
        parents: Callable[[], Awaitable[dict[int | str, Any]]] | None = None,
    ) -> None:
        self.resources = resources
        self.worker_id = worker_id
        self.cancelled = CancelledFlag()
        self._log = log
        self._bind_log = bind_log
        self._fetch_parents = parents
        self._parents: dict[int | str, Any] | None = None
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None

    async def parent_results(self) -> dict[int | str, Any]:
        """The results of the parents this job waited for (``after=``, a workflow's edges), under each parent's
        job id and, in a workflow, its step name too. Read from the database on the first call only; a parent
        that returned None is absent."""
        if self._parents is None:
            self._parents = {} if self._fetch_parents is None else await self._fetch_parents()
        return self._parents

    def parent_results_blocking(self, timeout: float = 30.0) -> dict[int | str, Any]:
        """``parent_results`` for a plain ``def`` handler (it runs in a thread of the worker)."""
        if self._parents is None:
            if self._loop is None:
                return {}
            future = asyncio.run_coroutine_threadsafe(self.parent_results(), self._loop)
            return future.result(timeout)
        return self._parents

    @property
    def log(self) -> Any:
        # Bound on first use: most handlers never log, and binding per job shows in the dispatch profile.
        if self._log is None and self._bind_log is not None:
            self._log = self._bind_log()
        return self._log


class RetryLater(Exception):
    """Raise from a handler to run the job again after ``delay`` (seconds or a timedelta).

    It is an instruction, not a failure: the job is retried whatever the entrypoint's ``max_attempts`` says
    (``job.attempts`` still counts the runs, so a handler can decide when to stop asking).
    """

    def __init__(self, delay: float | timedelta = 0.0, reason: str = "") -> None:
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
        if seconds < 0:
            raise ValueError("RetryLater delay must not be negative")
        self.delay = seconds
        self.reason = reason
        super().__init__(reason or f"retry requested in {seconds:g}s")
