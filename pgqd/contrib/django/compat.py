"""Django's Tasks framework: ``django.tasks`` from Django 6 on, the ``django_tasks`` backport on Django 5.2."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


def _import(django_6: str, backport: str) -> ModuleType:
    try:
        return importlib.import_module(django_6)
    except ImportError:
        pass
    try:
        return importlib.import_module(backport)
    except ImportError as exc:
        raise ImportError(
            "Django tasks need Django 6, or Django 5.2 with the django-tasks backport: pip install 'pgqd[django]'"
        ) from exc


_base = _import("django.tasks.base", "django_tasks.base")
_exceptions = _import("django.tasks.exceptions", "django_tasks.exceptions")
_json = _import("django.utils.json", "django_tasks.utils")
_signals = _import("django.tasks.signals", "django_tasks.signals")

BaseTaskBackend: Any = _import("django.tasks.backends.base", "django_tasks.backends.base").BaseTaskBackend
Task: Any = _base.Task
TaskContext: Any = _base.TaskContext
TaskError: Any = _base.TaskError
TaskResult: Any = _base.TaskResult
TaskResultStatus: Any = _base.TaskResultStatus
task: Any = _base.task
TaskResultDoesNotExist: Any = _exceptions.TaskResultDoesNotExist
# Django 6 calls it InvalidTask; the backport InvalidTaskError.
InvalidTaskError: Any = getattr(_exceptions, "InvalidTask", None) or _exceptions.InvalidTaskError
normalize_json: Any = _json.normalize_json
task_enqueued: Any = _signals.task_enqueued
task_started: Any = _signals.task_started
task_finished: Any = _signals.task_finished
task_backends: Any = _import("django.tasks", "django_tasks").task_backends

__all__ = [
    "BaseTaskBackend",
    "InvalidTaskError",
    "Task",
    "TaskContext",
    "TaskError",
    "TaskResult",
    "TaskResultDoesNotExist",
    "TaskResultStatus",
    "normalize_json",
    "task",
    "task_backends",
    "task_enqueued",
    "task_finished",
    "task_started",
]
