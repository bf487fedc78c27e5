"""A backend for Django's Tasks framework that stores each task as a pgqd job, on Django's own connection.

    TASKS = {"default": {"BACKEND": "pgqd.contrib.django.PgqdTaskBackend"}}

Enqueueing inside ``transaction.atomic()`` makes the task part of that transaction. The pgqd daemon runs the
tasks when its config has ``[django] settings = "..."``; a task's queue Q is the pgqd entrypoint ``django.Q``.
OPTIONS: ``DATABASE`` (the Django database alias holding the pgqd tables, default "default"), ``SCHEMA`` and
``PREFIX`` (of the pgqd tables, default "public" and "pgqd_").
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from pgqd.contrib.django.calls import encode_call
from pgqd.contrib.django.compat import BaseTaskBackend, TaskResult, TaskResultStatus, task_enqueued
from pgqd.contrib.django.producer import client
from pgqd.contrib.django.results import enqueued_at, read_result, result_id
from pgqd.identifiers import Names
from pgqd.models import DJANGO_ENTRYPOINT_PREFIX

_OPTIONS = {"DATABASE", "SCHEMA", "PREFIX"}


class PgqdTaskBackend(BaseTaskBackend):  # type: ignore[misc]  # Django is untyped
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        options = self.options
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise ImproperlyConfigured(
                f"TASKS[{alias!r}]['OPTIONS']: unknown option(s) {', '.join(unknown)} for PgqdTaskBackend "
                f"(it takes {', '.join(sorted(_OPTIONS))})"
            )
        self.database: str = options.get("DATABASE", "default")
        self.names = Names(options.get("SCHEMA", "public"), options.get("PREFIX", "pgqd_"))

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        self.validate_task(task)
        payload, call = encode_call(task, args, kwargs, self.alias)
        run_after = task.run_after
        if run_after is not None and timezone.is_naive(run_after):
            # USE_TZ = False: Django's datetimes are naive local times of settings.TIME_ZONE.
            run_after = timezone.make_aware(run_after)
        producer = client(self.database, schema=self.names.schema, prefix=self.names.prefix)
        job_id = producer.enqueue(
            DJANGO_ENTRYPOINT_PREFIX + task.queue_name, payload, priority=task.priority, execute_after=run_after
        )
        assert job_id is not None  # no dedupe key, so never skipped
        result = TaskResult(
            task=task,
            id=result_id(job_id),
            status=TaskResultStatus.READY,
            # The database's time, which get_result reads too, so both give equal results.
            enqueued_at=enqueued_at(self.database, self.names, job_id),
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=call.args,
            kwargs=call.kwargs,
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> Any:
        """The task result of job ``result_id``: TaskResultDoesNotExist unless it is a job of this backend."""
        return read_result(self.database, self.names, self.alias, result_id)
