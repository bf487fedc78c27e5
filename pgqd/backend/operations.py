"""Each producer operation written once, for every driver: which statement it sends with which arguments,
and how it reads the rows that come back.

An operation is a generator: it yields a ``Query`` and is sent back the rows (positional) that the query
returned; its return value is the operation's result. ``run_sync`` and ``run_async`` drive one against a
driver's ``fetch``, and turn the driver's errors into pgqd's. A new producer call is one generator here plus
a one-line method on each client.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Generator, Sequence
from typing import Any, NamedTuple, NoReturn, TypeVar

from pgqd.backend.driver_errors import translate_error
from pgqd.models import CancelResult, ErrorInfo, FinalStatus, JobState, NewJob, OnConflict, PauseState, PlainJobs
from pgqd.sql.notices import enqueue_notice, wake_notice
from pgqd.sql.pauses import pause_statements_for
from pgqd.sql.statements import Statements

T = TypeVar("T")

# Batches at least this big of one entrypoint and one priority send those once (see ENQUEUE_UNIFORM).
UNIFORM_BATCH_MIN = 40


class Query(NamedTuple):
    sql: str
    args: tuple[Any, ...]


Rows = Sequence[Sequence[Any]]
Operation = Generator[Query, Rows, T]
SyncFetch = Callable[[str, tuple[Any, ...]], Rows]
AsyncFetch = Callable[[str, tuple[Any, ...]], Awaitable[Rows]]


def enqueue(sql: Statements, jobs: Sequence[NewJob], on_conflict: OnConflict) -> Operation[list[int | None]]:
    if not jobs:
        return []
    if len(jobs) == 1:
        return (yield from _enqueue_one(sql, jobs[0], on_conflict))
    channel = sql.names.channel
    count = len(jobs)
    entrypoints: Sequence[str]
    payloads: Sequence[bytes | None]
    priorities: Sequence[int]
    if isinstance(jobs, PlainJobs):
        entrypoints, payloads, priorities = jobs.entrypoints, jobs.payloads, jobs.priorities
        plain = True
    else:
        # One transposition in C rather than a Python loop per question asked of every job (~0.5 ms per 1,000).
        entrypoints, payloads, priorities, delays, ats, keys, headers = zip(*jobs, strict=True)
        plain = keys.count(None) == headers.count(None) == ats.count(None) == count and not any(delays)
    if plain:
        first = jobs[0]
        uniform = (
            count >= UNIFORM_BATCH_MIN
            and entrypoints.count(first.entrypoint) == count
            and priorities.count(first.priority) == count
        )
        if uniform and payloads.count(None) == count:
            rows = yield Query(
                sql.enqueue_bare, (first.entrypoint, first.priority, count, channel, enqueue_notice(jobs))
            )
        elif uniform:
            rows = yield Query(
                sql.enqueue_uniform,
                (first.entrypoint, list(payloads), first.priority, channel, enqueue_notice(jobs)),
            )
        else:
            rows = yield Query(
                sql.enqueue_plain,
                (list(entrypoints), list(payloads), list(priorities), channel, enqueue_notice(jobs)),
            )
        return list(rows[0][0])
    statement = {
        "raise": sql.enqueue_or_raise,
        "skip": sql.enqueue_or_skip,
        "raise_priority": sql.enqueue_or_raise_priority,
    }[on_conflict]
    rows = yield Query(
        statement,
        (
            list(entrypoints),
            list(payloads),
            list(headers),
            list(priorities),
            list(delays),
            list(ats),
            list(keys),
            channel,
            enqueue_notice(jobs),
        ),
    )
    return [row[0] for row in rows]


def _enqueue_one(sql: Statements, job: NewJob, on_conflict: OnConflict) -> Operation[list[int | None]]:
    """One job, as single values rather than arrays of one (see ENQUEUE_ONE)."""
    channel, notice = sql.names.channel, enqueue_notice([job])
    if job.dedupe_key is None and job.headers is None and not job.delay and job.execute_after is None:
        rows = yield Query(sql.enqueue_one, (job.entrypoint, job.payload, job.priority, channel, notice))
    else:
        statement = {
            "raise": sql.enqueue_one_or_raise,
            "skip": sql.enqueue_one_or_skip,
            "raise_priority": sql.enqueue_one_or_raise_priority,
        }[on_conflict]
        values = (job.entrypoint, job.payload, job.headers, job.priority, job.delay, job.execute_after)
        rows = yield Query(statement, (*values, job.dedupe_key, channel, notice))
    return [rows[0][0]]


def cancel(sql: Statements, ids: Sequence[int], status: FinalStatus = "canceled") -> Operation[CancelResult]:
    canceled: list[int] = []
    signalled: list[int] = []
    pending = list(dict.fromkeys(ids))
    # A job being claimed at this very moment is neither waiting nor visibly running to this statement's
    # snapshot; a second pass over the ids still live settles it.
    for _ in range(2):
        if not pending:
            break
        rows = yield Query(sql.cancel_jobs, (pending, status, sql.names.channel))
        done, asked = list(rows[0][0]), list(rows[0][1])
        canceled.extend(done)
        signalled.extend(asked)
        handled = set(done) | set(asked)
        unhandled = [i for i in pending if i not in handled]
        if not unhandled:
            break
        states = yield from job_states(sql, unhandled)
        pending = [i for i in unhandled if i in states and not states[i].finished]
    return CancelResult(canceled=canceled, signalled=signalled)


def requeue(sql: Statements, ids: Sequence[int]) -> Operation[list[int]]:
    rows = yield Query(sql.requeue_held, (list(ids), sql.names.channel))
    return list(rows[0][0])


def job_states(sql: Statements, ids: Sequence[int]) -> Operation[dict[int, JobState]]:
    rows = yield Query(sql.job_states, (list(ids),))
    return {row[0]: job_state(row) for row in rows}


def watch_finished(sql: Statements, job_id: int) -> Operation[bool]:
    rows = yield Query(sql.watch_finished, (job_id, sql.names.channel))
    return bool(rows) and rows[0][0] is not None


def pause(sql: Statements, entrypoints: Sequence[str] | None) -> Operation[None]:
    """Pauses these entrypoints fleet-wide; None pauses every entrypoint, those not seen yet included."""
    statements = pause_statements_for(sql.names)
    if entrypoints is None:
        yield Query(statements.pause_all, ())
    else:
        yield Query(statements.pause, (list(entrypoints),))


def resume(sql: Statements, entrypoints: Sequence[str] | None) -> Operation[None]:
    """Resumes these entrypoints (None: every one) and wakes idle workers to claim at once."""
    statements = pause_statements_for(sql.names)
    if entrypoints is None:
        yield Query(statements.resume_all, (sql.names.channel, wake_notice(())))
    else:
        names = list(entrypoints)
        yield Query(statements.resume, (names, sql.names.channel, wake_notice(names)))


def pauses(sql: Statements) -> Operation[PauseState]:
    rows = yield Query(pause_statements_for(sql.names).pauses, ())
    return PauseState.from_rows((row[0], row[1]) for row in rows)


def job_state(row: Sequence[Any]) -> JobState:
    """One row of JOB_STATES, which lists its columns in the order of JobState's fields."""
    error = None if row[7] is None else ErrorInfo(row[7], row[8] or "", row[9] or "")
    result = None if row[10] is None else json.loads(row[10])
    # psycopg2 reads bytea as a memoryview.
    payload = None if row[11] is None else bytes(row[11])
    return JobState(row[0], row[1], row[2], row[3], row[4], row[5], row[6], error, result, payload)


def run_sync(operation: Operation[T], fetch: SyncFetch) -> T:
    """Runs ``operation`` on a blocking driver."""
    try:
        query = next(operation)
        while True:
            try:
                rows = fetch(query.sql, query.args)
            except Exception as exc:
                _reraise(exc)
            query = operation.send(rows)
    except StopIteration as stop:
        result: T = stop.value
        return result


async def run_async(operation: Operation[T], fetch: AsyncFetch) -> T:
    """Runs ``operation`` on an asynchronous driver."""
    try:
        query = next(operation)
        while True:
            try:
                rows = await fetch(query.sql, query.args)
            except Exception as exc:
                _reraise(exc)
            query = operation.send(rows)
    except StopIteration as stop:
        result: T = stop.value
        return result


def _reraise(exc: Exception) -> NoReturn:
    translated = translate_error(exc)
    if translated is None:
        raise exc
    raise translated from exc
