"""The backends the suites' settings name, in place of the reference ones: PgqdTaskBackend, plus the suites'
"run the worker" step.

- ``ImmediateAdapter`` stands for ImmediateBackend and DatabaseBackend-then-worker: it enqueues through pgqd and
  returns once the daemon has run the task (the daemon is the worker; the wait is bounded).
- ``DummyAdapter`` stands for DummyBackend: tasks are enqueued through pgqd into tables no daemon serves, so they
  stay READY; ``results`` and ``clear()`` (DummyBackend's own test API) list what was enqueued, read back through
  ``get_result``.
"""

from __future__ import annotations

import time
from typing import Any

from pgqd.contrib.django import PgqdTaskBackend
from pgqd.identifiers import Names

# Tables of the same database that no daemon serves (the runner installs them).
IDLE_PREFIX = "pgqd_idle_"
RUN_TIMEOUT = 30.0
# The Django queues the suites use; the daemon serves each (tests/test_django_reference.py).
SERVED_QUEUES = ("default", "queue_1", "queue-1")


class WorkerSideBackend(PgqdTaskBackend):  # type: ignore[misc]
    """Every alias in the daemon's worker processes: plain PgqdTaskBackend."""


def wait_until_finished(backend: PgqdTaskBackend, result: Any, timeout: float = RUN_TIMEOUT) -> None:
    """The suites' "run the worker" step: the daemon runs the task; wait, bounded, until it has finished."""
    deadline = time.monotonic() + timeout
    while True:
        result.refresh()
        if result.is_finished:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the daemon did not finish task {result.id} within {timeout:g}s")
        time.sleep(0.01)


class ImmediateAdapter(PgqdTaskBackend):  # type: ignore[misc]
    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        result = super().enqueue(task, args, kwargs)
        wait_until_finished(self, result)
        return result


class DummyAdapter(PgqdTaskBackend):  # type: ignore[misc]
    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.names = Names(self.names.schema, IDLE_PREFIX)
        self._ids: list[str] = []

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        result = super().enqueue(task, args, kwargs)
        self._ids.append(result.id)
        return result

    @property
    def results(self) -> list[Any]:
        return [self.get_result(result_id) for result_id in self._ids]

    def clear(self) -> None:
        from django.db import connections

        self._ids.clear()
        with connections[self.database].cursor() as cursor:
            cursor.execute(f"DELETE FROM {self.names.table('jobs')}; DELETE FROM {self.names.table('log')}")


class DatabaseAdapter(PgqdTaskBackend):  # type: ignore[misc]
    """Stands for django-tasks-db's DatabaseBackend: tasks wait until the suite runs the worker (``run_worker``);
    until then the daemon's Django queues are paused."""


def pause_the_worker() -> None:
    """Before the suite: tasks wait for ``run_worker``, as with DatabaseBackend and no worker running."""
    from pgqd.contrib.django import client

    client().pause(*(f"django.{queue}" for queue in SERVED_QUEUES))


def run_worker(queue_name: str = "default", exclude_queues: str = "", **_options: Any) -> None:
    """The suite's "run the worker" step (its ``db_worker --batch``): the daemon runs the waiting tasks of these
    queues, then the queues are paused again."""
    from django.db import connection

    from pgqd.contrib.django import client

    wanted = set(SERVED_QUEUES) if queue_name == "*" else set(queue_name.split(","))
    wanted -= set(exclude_queues.split(","))
    entrypoints = sorted(f"django.{queue}" for queue in wanted & set(SERVED_QUEUES))
    producer = client()
    if not entrypoints:
        return
    producer.resume(*entrypoints)
    deadline = time.monotonic() + RUN_TIMEOUT
    try:
        while True:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM pgqd_jobs WHERE entrypoint = ANY (%s) AND (status IN ('queued', 'picked')"
                    " OR (status = 'deferred' AND execute_after <= now()))",
                    [entrypoints],
                )
                (left,) = cursor.fetchone()
            if left == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the daemon left {left} task(s) of {entrypoints} unrun after {RUN_TIMEOUT:g}s")
            time.sleep(0.01)
    finally:
        producer.pause(*entrypoints)
