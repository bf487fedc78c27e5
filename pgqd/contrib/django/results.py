"""Django ``TaskResult``s read from pgqd's tables: the live job while it waits or runs, its log row after.

A result id is the job's number and nothing else. Everything a result says (which task, its arguments, its
``run_after``, the backend alias that enqueued it) is read from the stored job's payload, which the log keeps for
Django queues; nothing named by an id is ever imported.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connections
from django.utils.module_loading import import_string

from pgqd.contrib.django.calls import TaskCall, decode_call
from pgqd.contrib.django.compat import (
    InvalidTaskError,
    Task,
    TaskError,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
)
from pgqd.errors import PgqdError
from pgqd.identifiers import Names
from pgqd.models import DJANGO_ENTRYPOINT_PREFIX, MAX_JOB_ID
from pgqd.producers.placeholders import bind
from pgqd.sql import render
from pgqd.sql.stats import JOB_DETAIL

# A task result is read with the job page's statement (JOB_DETAIL, pgqd/sql/stats.py): a job is in exactly one of
# the two tables, as finishing moves it from jobs to log in one transaction. Run on Django's cursor, whose
# placeholder is %s for both psycopg and psycopg2.
_TASK_RESULT_COLUMNS = (
    "status", "entrypoint", "priority", "attempts", "worker_id", "created_at", "started_at", "finished_at",
    "error_type", "error_traceback", "payload", "result",
)  # fmt: skip

# When a job was enqueued, on the database's clock: the same value get_result reads later.
ENQUEUED_AT = """
SELECT j.created_at FROM {jobs} AS j WHERE j.id = %s::bigint
UNION ALL
SELECT l.created_at FROM {log} AS l WHERE l.job_id = %s::bigint
"""

_STATUSES = {
    "queued": TaskResultStatus.READY,
    "deferred": TaskResultStatus.READY,
    "suspect": TaskResultStatus.READY,  # waits to run again, alone, after its worker died
    "picked": TaskResultStatus.RUNNING,
    "failed": TaskResultStatus.FAILED,  # held for an operator after its last attempt
    "successful": TaskResultStatus.SUCCESSFUL,
    "exception": TaskResultStatus.FAILED,
    "timeout": TaskResultStatus.FAILED,
    "canceled": TaskResultStatus.FAILED,
    "deleted": TaskResultStatus.FAILED,
}

# Django's statuses have no "canceled": a task stopped by an operator is FAILED with this error.
_CANCELED_ERROR = "asyncio.exceptions.CancelledError"

# A job id: a positive bigint in ASCII digits. Ids handed out before ids were bare numbers were
# "<job id>:<task path>"; they still name their job, when the path is the one the job was enqueued with.
_RESULT_ID = re.compile(r"([1-9][0-9]{0,18})(?::([^\s:]+))?", re.ASCII)


def result_id(job_id: int) -> str:
    """A task result's id: the pgqd job's number."""
    return str(job_id)


def parse_result_id(value: object) -> tuple[int, str | None]:
    """The job number of a result id, and the task path of an id in the earlier form; TaskResultDoesNotExist
    for anything else."""
    found = _RESULT_ID.fullmatch(str(value)) if isinstance(value, str | int) and not isinstance(value, bool) else None
    if found is None or int(found[1]) > MAX_JOB_ID:
        raise TaskResultDoesNotExist(f"{value!r} is not a pgqd task result id (a job number)")
    return int(found[1]), found[2]


@dataclass(frozen=True)
class Row:
    status: str
    entrypoint: str
    priority: int
    attempts: int
    worker_id: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error_type: str | None
    error_traceback: str | None
    payload: bytes | None
    result: str | None


def read_row(using: str, names: Names, job_id: int) -> Row | None:
    sql, args = bind(render(JOB_DETAIL, names), [job_id], "format")
    with connections[using].cursor() as cursor:
        cursor.execute(sql, args)
        found = cursor.fetchone()
        if found is None:
            return None
        fields = dict(zip((column[0] for column in cursor.description), found, strict=True))
    # psycopg2 reads bytea as a memoryview.
    payload = fields["payload"]
    fields["payload"] = None if payload is None else bytes(payload)
    return Row(*(fields[name] for name in _TASK_RESULT_COLUMNS))


def enqueued_at(using: str, names: Names, job_id: int) -> datetime:
    sql = ENQUEUED_AT.format(jobs=names.table("jobs"), log=names.table("log"))
    with connections[using].cursor() as cursor:
        cursor.execute(sql, [job_id, job_id])
        found = cursor.fetchone()
    if found is None:  # pruned from the log already: only with a retention shorter than an enqueue
        raise TaskResultDoesNotExist(f"job {job_id} vanished right after it was enqueued")
    created: datetime = found[0]
    return created


def load_task(path: str) -> Any:
    """The task a stored job names (the worker's and get_result's only way to a task)."""
    task = import_string(path)
    if not isinstance(task, Task):
        raise TypeError(f"{path} is not a Django task (decorate the function with @task)")
    return task


def stored_call(row: Row | None, backend: str, value: object, legacy_path: str | None) -> TaskCall:
    """The call a job of this backend stored, or TaskResultDoesNotExist: no such job, a job that is no Django
    task, one enqueued through another backend alias, or an id whose task path is not the job's."""
    if row is None or row.payload is None or not row.entrypoint.startswith(DJANGO_ENTRYPOINT_PREFIX):
        raise TaskResultDoesNotExist(f"no task result {value!r}")
    try:
        call = decode_call(row.payload)
    except PgqdError:
        raise TaskResultDoesNotExist(f"no task result {value!r}: the job is not a Django task") from None
    if call.backend not in (None, backend) or legacy_path not in (None, call.path):
        raise TaskResultDoesNotExist(f"no task result {value!r} for backend {backend!r}")
    return call


def task_as_enqueued(task: Any, backend: str, entrypoint: str, priority: int, call: TaskCall) -> Any:
    """The task with the options it was enqueued with (``task.using(...)``), from what the job stored."""
    queue = entrypoint.removeprefix(DJANGO_ENTRYPOINT_PREFIX)
    if (task.priority, task.queue_name, task.backend, task.run_after) != (priority, queue, backend, call.run_after):
        task = task.using(priority=priority, queue_name=queue, backend=backend, run_after=call.run_after)
    return task


def build_result(task: Any, backend: str, job_id: int, row: Row, call: TaskCall) -> Any:
    task = task_as_enqueued(task, backend, row.entrypoint, row.priority, call)
    status = _STATUSES[row.status]
    result = TaskResult(
        task=task,
        id=result_id(job_id),
        status=status,
        enqueued_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        last_attempted_at=row.started_at,
        args=call.args,
        kwargs=call.kwargs,
        backend=backend,
        errors=_errors(row),
        # pgqd keeps the last worker of a job only; Django counts attempts as the length of this list.
        worker_ids=[worker_label(row.worker_id)] * row.attempts,
    )
    if status == TaskResultStatus.SUCCESSFUL and row.result is not None:
        object.__setattr__(result, "_return_value", json.loads(row.result))
    return result


def worker_label(worker_id: int | None) -> str:
    """A worker as Django's ``worker_ids`` name it: pgqd's worker id, as the log and the web UI show it."""
    return "" if not worker_id else str(worker_id)


def _errors(row: Row) -> list[TaskError]:
    if row.status in ("canceled", "deleted"):
        return [TaskError(exception_class_path=_CANCELED_ERROR, traceback=f"the job was {row.status} in pgqd")]
    if row.error_type is None or row.status == "successful":
        return []
    # pgqd names built-in exceptions without their module ("ValueError"); Django wants the full path.
    path = row.error_type if "." in row.error_type else f"builtins.{row.error_type}"
    return [TaskError(exception_class_path=path, traceback=row.error_traceback or "")]


def read_result(using: str, names: Names, backend: str, value: object) -> Any:
    job_id, legacy_path = parse_result_id(value)
    row = read_row(using, names, job_id)
    call = stored_call(row, backend, value, legacy_path)
    assert row is not None  # stored_call refuses a missing row
    try:
        task = load_task(call.path)
    except (ImportError, AttributeError, TypeError) as exc:
        # The job's own payload names a task this code base no longer has.
        raise TaskResultDoesNotExist(f"task result {value!r}: its task {call.path} cannot be loaded: {exc}") from None
    try:
        return build_result(task, backend, job_id, row, call)
    except InvalidTaskError:
        # Its queue or priority is not one this backend takes: it was not enqueued through it.
        raise TaskResultDoesNotExist(f"no task result {value!r} for backend {backend!r}") from None
