"""Django ``TaskResult``s read from pgqd's tables: the live job while it waits or runs, its log row after."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connections
from django.utils.module_loading import import_string

from pgqd.config.model import DJANGO_ENTRYPOINT_PREFIX
from pgqd.contrib.django.calls import decode_call
from pgqd.contrib.django.compat import Task, TaskError, TaskResult, TaskResultDoesNotExist, TaskResultStatus
from pgqd.identifiers import Names

# A job is in exactly one of the two tables: finishing moves it from jobs to log in one transaction. Run on
# Django's cursor, whose placeholder is %s for both psycopg and psycopg2.
TASK_RESULT = """
SELECT j.status::text, j.entrypoint, j.priority, j.attempts, j.worker_id, j.created_at, j.picked_at,
       NULL::timestamptz, j.last_error->>'type', j.last_error->>'traceback', j.payload, NULL::text
FROM {jobs} AS j WHERE j.id = %s::bigint
UNION ALL
SELECT l.status::text, l.entrypoint, l.priority, l.attempts, l.worker_id, l.created_at, l.started_at,
       l.finished_at, l.error_type, l.error_traceback, NULL::bytea, l.result::text
FROM {log} AS l WHERE l.job_id = %s::bigint
"""

_STATUSES = {
    "queued": TaskResultStatus.READY,
    "deferred": TaskResultStatus.READY,
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


def result_id(job_id: int, path: str) -> str:
    """A task result's id: the pgqd job id, then the task's import path (the log keeps no payload, so the id is
    where a finished job's task is found again)."""
    return f"{job_id}:{path}"


def parse_result_id(value: str) -> tuple[int, str]:
    job_id, _, path = str(value).partition(":")
    if not job_id.isdigit() or not path:
        raise TaskResultDoesNotExist(f"{value!r} is not a pgqd task result id (expected '<job id>:<task path>')")
    return int(job_id), path


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
    sql = TASK_RESULT.format(jobs=names.table("jobs"), log=names.table("log"))
    with connections[using].cursor() as cursor:
        cursor.execute(sql, [job_id, job_id])
        found = cursor.fetchone()
    if found is None:
        return None
    # psycopg2 reads bytea as a memoryview.
    payload = None if found[10] is None else bytes(found[10])
    status, entrypoint, priority, attempts, worker_id, created, started, finished, error_type, traceback = found[:10]
    return Row(
        status,
        entrypoint,
        priority,
        attempts,
        worker_id,
        created,
        started,
        finished,
        error_type,
        traceback,
        payload,
        found[11],
    )


def load_task(path: str) -> Any:
    task = import_string(path)
    if not isinstance(task, Task):
        raise TypeError(f"{path} is not a Django task (decorate the function with @task)")
    return task


def build_result(task: Any, backend: str, job_id: int, row: Row) -> Any:
    queue = row.entrypoint.removeprefix(DJANGO_ENTRYPOINT_PREFIX)
    if (task.priority, task.queue_name, task.backend) != (row.priority, queue, backend):
        task = task.using(priority=row.priority, queue_name=queue, backend=backend)
    call = decode_call(row.payload) if row.payload is not None else None
    status = _STATUSES[row.status]
    result = TaskResult(
        task=task,
        id=result_id(job_id, task.module_path),
        status=status,
        enqueued_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        last_attempted_at=row.started_at,
        # The log keeps no payload: the arguments are known while the job is live.
        args=call.args if call else [],
        kwargs=call.kwargs if call else {},
        backend=backend,
        errors=_errors(row),
        # pgqd keeps the last worker of a job only; Django counts attempts as the length of this list.
        worker_ids=[str(row.worker_id or "")] * row.attempts,
    )
    if status == TaskResultStatus.SUCCESSFUL and row.result is not None:
        object.__setattr__(result, "_return_value", json.loads(row.result))
    return result


def _errors(row: Row) -> list[TaskError]:
    if row.status in ("canceled", "deleted"):
        return [TaskError(exception_class_path=_CANCELED_ERROR, traceback=f"the job was {row.status} in pgqd")]
    if row.error_type is None or row.status == "successful":
        return []
    # pgqd names built-in exceptions without their module ("ValueError"); Django wants the full path.
    path = row.error_type if "." in row.error_type else f"builtins.{row.error_type}"
    return [TaskError(exception_class_path=path, traceback=row.error_traceback or "")]


def read_result(using: str, names: Names, backend: str, value: str) -> Any:
    job_id, path = parse_result_id(value)
    row = read_row(using, names, job_id)
    if row is None or not row.entrypoint.startswith(DJANGO_ENTRYPOINT_PREFIX):
        raise TaskResultDoesNotExist(f"no task result {value!r}")
    return build_result(load_task(path), backend, job_id, row)
