"""Tasks the daemon runs in the Django tests."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from django.db import connection

from pgqd.contrib.django.compat import TaskContext, task
from tests.django_project import signals  # noqa: F401 - connects the receivers wherever the tasks are loaded


@task()
def welcome(signup_id: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("UPDATE test_signups SET welcomed = true WHERE id = %s RETURNING email", [signup_id])
        (email,) = cursor.fetchone()
    return f"welcome {email}"


@task()
def add(a: int, b: int) -> int:
    assert threading.current_thread() is not threading.main_thread()
    return a + b


@task()
def explode(message: str) -> None:
    raise ValueError(message)


@task()
async def double_later(n: int) -> dict[str, Any]:
    await asyncio.sleep(0.01)
    # The worker's event loop runs in the main thread of its process; sync tasks run in its thread pool.
    return {"double": n * 2, "on_loop": threading.current_thread() is threading.main_thread()}


@task(takes_context=True)
def which_attempt(context: TaskContext) -> int:
    return int(context.attempt)


@task()
def returns_a_set() -> set[int]:
    return {1, 2}


@task(queue_name="slow")
def sleepy(seconds: float) -> None:
    time.sleep(seconds)


@task(queue_name="fragile")
def refuse() -> None:
    raise PermissionError("not today")


@task()
def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": list(args), "kwargs": kwargs}


@task(takes_context=True)
def worker_ids_seen(context: TaskContext) -> list[str]:
    return list(context.task_result.worker_ids)
