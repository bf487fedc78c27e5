"""Running Django tasks in the pgqd daemon.

Each worker process sets Django up once after the fork (``setup_django``). Every Django queue is an entrypoint
whose handler is ``run_task``: a plain function, so the worker calls it in its thread pool. A sync task runs
right there, between Django's connection clean-ups, as a request would; for an async task it hands back a
coroutine, which the worker awaits on its event loop.
"""

from __future__ import annotations

import inspect
import os
import socket
from collections.abc import Coroutine
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import django
from asgiref.sync import sync_to_async
from django.db import close_old_connections

from pgqd.contrib.django.calls import TaskCall, decode_call, json_result
from pgqd.contrib.django.compat import TaskContext, TaskResult, TaskResultStatus
from pgqd.contrib.django.results import load_task, result_id
from pgqd.imports import import_module
from pgqd.job import Job


def setup_django(settings: str) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = settings
    import_module(settings)  # from the daemon's directory, as handlers are
    django.setup()


@lru_cache(maxsize=1024)
def _task(path: str) -> Any:
    return load_task(path)


def run_task(job: Job) -> Any:
    call = decode_call(job.payload)
    task = _task(call.path)
    args = [_context(task, call, job), *call.args] if task.takes_context else call.args
    if inspect.iscoroutinefunction(task.func):
        return _run_async(task, args, call.kwargs)
    close_old_connections()
    try:
        value = task.func(*args, **call.kwargs)
    finally:
        close_old_connections()
    return json_result(value, call.path)


async def _run_async(task: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    await sync_to_async(close_old_connections)()
    try:
        coroutine: Coroutine[Any, Any, Any] = task.func(*args, **kwargs)
        value = await coroutine
    finally:
        await sync_to_async(close_old_connections)()
    return json_result(value, task.module_path)


def _context(task: Any, call: TaskCall, job: Job) -> TaskContext:
    now = datetime.now(UTC)
    return TaskContext(
        task_result=TaskResult(
            task=task,
            id=result_id(job.id, call.path),
            status=TaskResultStatus.RUNNING,
            enqueued_at=job.created_at,
            started_at=now,
            finished_at=None,
            last_attempted_at=now,
            args=call.args,
            kwargs=call.kwargs,
            backend=task.backend,
            errors=[],
            worker_ids=[f"{socket.gethostname()}:{os.getpid()}"] * job.attempts,
        )
    )
