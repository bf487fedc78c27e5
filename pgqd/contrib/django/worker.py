"""Running Django tasks in the pgqd daemon.

Each worker process sets Django up once after the fork (``setup_django``). Every Django queue is an entrypoint
whose handler is ``run_task``: a plain function, so the worker calls it in its thread pool. A sync task runs
right there, between Django's connection clean-ups, as a request would; for an async task it hands back a
coroutine, which the worker awaits on its event loop. Django's ``task_started`` and ``task_finished`` signals are
sent around each run, as Django's own backends do.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import traceback
from collections.abc import Coroutine
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import django
from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.db import close_old_connections

from pgqd.contrib.django.backend import PgqdTaskBackend
from pgqd.contrib.django.calls import TaskCall, decode_call, json_result
from pgqd.contrib.django.compat import (
    InvalidTaskError,
    TaskContext,
    TaskError,
    TaskResult,
    TaskResultStatus,
    task_finished,
    task_started,
)
from pgqd.contrib.django.results import load_task, result_id, task_as_enqueued, worker_label
from pgqd.imports import import_module
from pgqd.job import Context, Job


def setup_django(settings: str) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = settings
    import_module(settings)  # from the daemon's directory, as handlers are
    django.setup()


@lru_cache(maxsize=1024)
def _task(path: str) -> Any:
    return load_task(path)


def run_task(job: Job, ctx: Context) -> Any:
    call = decode_call(job.payload)
    task = _task(call.path)
    run = _running(task, call, job, ctx.worker_id)
    args = [TaskContext(task_result=run), *call.args] if task.takes_context else call.args
    if inspect.iscoroutinefunction(task.func):
        return _run_async(run, args, call.kwargs)
    close_old_connections()
    try:
        task_started.send(PgqdTaskBackend, task_result=run)
        try:
            value = task.func(*args, **call.kwargs)
        except BaseException as exc:
            _failed(run, exc)
            raise
        return _succeeded(run, value)
    finally:
        close_old_connections()


async def _run_async(run: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    await sync_to_async(close_old_connections)()
    try:
        await sync_to_async(task_started.send)(PgqdTaskBackend, task_result=run)
        try:
            coroutine: Coroutine[Any, Any, Any] = run.task.func(*args, **kwargs)
            value = await coroutine
        except asyncio.CancelledError:
            # Stopped from outside (timeout, cancel, shutdown): the job's outcome is pgqd's to record, and a run
            # being cancelled must not wait for a signal receiver.
            raise
        except BaseException as exc:
            await sync_to_async(_failed)(run, exc)
            raise
        return await sync_to_async(_succeeded)(run, value)
    finally:
        await sync_to_async(close_old_connections)()


def _running(task: Any, call: TaskCall, job: Job, worker_id: int) -> Any:
    """The task result a run reports to the task itself (``takes_context``) and to signal receivers: the one
    get_result gives while the task runs."""
    now = datetime.now(UTC)
    try:
        enqueued = task_as_enqueued(task, call.backend or task.backend, job.entrypoint, job.priority, call)
    except (ImproperlyConfigured, InvalidTaskError):
        # This process's TASKS lack the alias or queue the producer's had: run the task as it is defined.
        enqueued = task
    return TaskResult(
        task=enqueued,
        id=result_id(job.id),
        status=TaskResultStatus.RUNNING,
        enqueued_at=job.created_at,
        started_at=now,
        finished_at=None,
        last_attempted_at=now,
        args=call.args,
        kwargs=call.kwargs,
        backend=call.backend or task.backend,
        errors=[],
        worker_ids=[worker_label(worker_id)] * job.attempts,
    )


def _succeeded(run: Any, value: Any) -> Any:
    try:
        stored = json_result(value, run.task.module_path)
    except TypeError as exc:
        _failed(run, exc)
        raise
    _finish(run, TaskResultStatus.SUCCESSFUL)
    object.__setattr__(run, "_return_value", stored)
    task_finished.send(PgqdTaskBackend, task_result=run)
    return stored


def _failed(run: Any, exc: BaseException) -> None:
    kind = type(exc)
    error = TaskError(
        exception_class_path=f"{kind.__module__}.{kind.__qualname__}",
        traceback="".join(traceback.format_exception(exc)),
    )
    run.errors.append(error)
    _finish(run, TaskResultStatus.FAILED)
    task_finished.send(PgqdTaskBackend, task_result=run)


def _finish(run: Any, status: Any) -> None:
    # TaskResult is a frozen dataclass; Django's own backends update it the same way.
    object.__setattr__(run, "status", status)
    object.__setattr__(run, "finished_at", datetime.now(UTC))
