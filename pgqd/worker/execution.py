"""Running one job: calling its handler under its timeout, and turning what happened into an outcome."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import json
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

from pgqd.entrypoint import Entrypoint
from pgqd.job import Context, Job, RetryLater
from pgqd.models import ClaimedJob, ErrorInfo, Finished, Outcome, Unfinished
from pgqd.payload import decode_headers
from pgqd.tracing import describe_outcome, job_span
from pgqd.tracing import enabled as tracing_enabled

log = structlog.get_logger("pgqd.worker")

StopReason = Literal["cancel", "shutdown"]


@dataclass(frozen=True)
class PreparedHandler:
    """A handler and how to call it, worked out once per entrypoint rather than once per job."""

    entrypoint: Entrypoint
    is_async: bool
    wants_context: bool

    @classmethod
    def prepare(cls, entrypoint: Entrypoint) -> PreparedHandler:
        handler = entrypoint.handler
        is_async = inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
            getattr(handler, "__call__", None)  # noqa: B004 - a callable object's async __call__
        )
        return cls(entrypoint, is_async, _positional_arity(handler) >= 2)


def _positional_arity(handler: Callable[..., Any]) -> int:
    try:
        parameters = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError):
        return 1
    count = 0
    for parameter in parameters:
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            return 2
        if parameter.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            count += 1
    return count


def error_info(exc: BaseException) -> ErrorInfo:
    kind = type(exc)
    name = (
        kind.__qualname__ if kind.__module__ in ("builtins", "__main__") else f"{kind.__module__}.{kind.__qualname__}"
    )
    return ErrorInfo(name, str(exc), "".join(traceback.format_exception(exc)))


@dataclass(slots=True)
class JobRun:
    """One run of one job. The engine cancels ``task`` after setting ``stop_reason``."""

    job: Job
    handler: PreparedHandler
    resources: Any
    claimed_at: float
    executor: Executor
    pid: int
    on_end: Callable[[JobRun, Outcome], None] | None = field(default=None, repr=False)
    worker_id: int = 0
    _context: Context | None = field(default=None, repr=False)
    # Where ctx.parent_results reads from (the worker's backend); set by the engine.
    results_source: Any = field(default=None, repr=False)
    started_at: float = 0.0
    stop_reason: StopReason | None = None
    began: bool = False
    task: asyncio.Task[Outcome] | None = field(default=None, repr=False)

    @classmethod
    def of_claim(
        cls,
        claimed: ClaimedJob,
        handler: PreparedHandler,
        resources: Any,
        claimed_at: float,
        executor: Executor,
        pid: int,
        on_end: Callable[[JobRun, Outcome], None] | None = None,
        *,
        worker_id: int = 0,
    ) -> JobRun:
        job = Job.of_claim(claimed, decode_headers(claimed.headers))
        return cls(job, handler, resources, claimed_at, executor, pid, on_end, worker_id)

    @property
    def context(self) -> Context:
        # Made when first needed: a handler that takes only the job never sees it, and most jobs neither log nor
        # are cancelled (a context and its flag cost about 1.5 us, made per job).
        if self._context is None:
            self._context = Context(
                self.resources, bind_log=self._bind_log, worker_id=self.worker_id, parents=self._parent_results
            )
        return self._context

    async def _parent_results(self) -> dict[int | str, Any]:
        if self.results_source is None:
            return {}
        results: dict[int | str, Any] = await self.results_source.parent_results(self.job.id)
        return results

    def _bind_log(self) -> Any:
        job = self.job
        return log.bind(entrypoint=job.entrypoint, job_id=job.id, attempt=job.attempts, pid=self.pid)

    def flag_cancelled(self) -> None:
        """Sets ``ctx.cancelled`` for a handler that has a context (no other can look at it)."""
        if self._context is not None:
            self._context.cancelled.set()

    def log_outcome(self, outcome: Outcome) -> None:
        _, duration = self.timing()
        status = outcome.status if isinstance(outcome, Finished) else outcome.kind
        fields = {"outcome": status, "duration": round(duration, 6)}
        if outcome.error is not None:
            self.context.log.warning("job failed", error=f"{outcome.error.type}: {outcome.error.message}", **fields)
        else:
            self.context.log.debug("job done", **fields)

    @property
    def requested_stop(self) -> StopReason | None:
        # Read through a property: the engine sets the reason while the handler is awaited.
        return self.stop_reason

    def stop(self, reason: StopReason) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self.flag_cancelled()
        # Only a run that has begun is cancelled: a coroutine cancelled before its first step never runs at all,
        # and its end (``on_end``) would be lost. One that has not begun reads the reason as it begins.
        if self.task is not None and self.began:
            self.task.cancel()

    async def run(self) -> Outcome:
        """Runs the job and hands its outcome to ``on_end`` (from here rather than from a done callback of the
        task: one object and one turn of the event loop less per job)."""
        self.began = True
        if self.stop_reason is not None:
            outcome = self._unrun()
        else:
            self.started_at = time.monotonic()
            try:
                outcome = await (self._attempt() if not tracing_enabled() else self._traced())
            except BaseException as exc:  # the handler's own errors are outcomes: this is a fault in pgqd
                log.error("job run failed inside pgqd; releasing the job", job_id=self.job.id, error=repr(exc))
                outcome = self._unrun()
        if self.on_end is not None:
            self.on_end(self, outcome)
        return outcome

    def _unrun(self) -> Outcome:
        """The outcome of a run that did not get to its handler's end: canceled if that was asked for, else the
        job goes back to the queue with its attempt not counted."""
        return self._finished("canceled") if self.stop_reason == "cancel" else Unfinished(self.job.id, "release")

    async def _traced(self) -> Outcome:
        job = self.job
        with job_span(job.entrypoint, job.id, job.attempts, job.headers) as span:
            outcome = await self._attempt()
            if span is not None:
                describe_outcome(span, outcome)
        return outcome

    async def _attempt(self) -> Outcome:
        deadline = None
        handler = self.handler
        entrypoint = handler.entrypoint
        try:
            if handler.is_async:
                # Awaited directly: one coroutine frame less per job on the hot path.
                args = (self.job, self.context) if handler.wants_context else (self.job,)
                call = handler.entrypoint.handler(*args)
            else:
                call = self._call_in_thread()
            if entrypoint.timeout is None:
                result = await call
            else:
                async with asyncio.timeout(entrypoint.timeout) as deadline:
                    result = await call
        except asyncio.CancelledError as exc:
            self.flag_cancelled()
            if self.requested_stop == "cancel":
                return self._finished("canceled")
            if self.requested_stop == "shutdown":
                return Unfinished(self.job.id, "release")
            # Nobody asked for this cancellation: the handler raised CancelledError itself.
            return self._failed(exc)
        except TimeoutError as exc:
            if deadline is not None and deadline.expired():
                self.flag_cancelled()
                return self._finished(
                    "timeout",
                    ErrorInfo("TimeoutError", f"handler exceeded its timeout of {entrypoint.timeout:g}s"),
                )
            return self._failed(exc)
        except RetryLater as request:
            return Unfinished(self.job.id, "retry", request.delay, error_info(request))
        except BaseException as exc:
            return self._failed(exc)
        return self._succeeded(result)

    async def _call_in_thread(self) -> Any:
        handler = self.handler
        args: tuple[Any, ...] = (self.job, self.context) if handler.wants_context else (self.job,)
        loop = asyncio.get_running_loop()
        # The thread runs in a copy of this task's context, so the job's span and other context variables follow.
        call = functools.partial(contextvars.copy_context().run, handler.entrypoint.handler, *args)
        result = await loop.run_in_executor(self.executor, call)
        if inspect.isawaitable(result):
            return await result
        return result

    def timing(self) -> tuple[float, float]:
        if not self.started_at:
            return 0.0, 0.0
        return self.started_at - self.claimed_at, time.monotonic() - self.started_at

    def _finished(self, status: Any, error: ErrorInfo | None = None, result_json: str | None = None) -> Finished:
        started_after, duration = self.timing()
        return Finished(self.job.id, status, started_after, duration, error, result_json)

    def _succeeded(self, result: Any) -> Outcome:
        if result is None:
            return self._finished("successful")
        stored = self.handler.entrypoint.store_result
        try:
            encoded = json.dumps(result, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            if not stored:
                return self._finished("successful")
            # The work is done; running it again to get a storable result would repeat its side effects.
            problem = ErrorInfo(type(exc).__name__, f"result not stored, it is not JSON-serialisable: {exc}")
            return self._finished("successful", problem)
        if stored:
            return self._finished("successful", result_json=encoded)
        # Not kept in the log, but handed to the job's children if it has any (the flush decides).
        outcome = self._finished("successful")
        outcome.handed_json = encoded
        return outcome

    def _failed(self, exc: BaseException) -> Outcome:
        retry = self.handler.entrypoint.retry
        info = error_info(exc)
        if self.job.attempts < retry.max_attempts:
            return Unfinished(self.job.id, "retry", retry.delay_after(self.job.attempts), info)
        return self._exhausted(info)

    def _exhausted(self, info: ErrorInfo) -> Outcome:
        if self.handler.entrypoint.on_failure == "hold":
            return Unfinished(self.job.id, "hold", 0.0, info)
        return self._finished("exception", info)
