"""Settings of the reference suites' runs, for the test process and the daemon's worker processes alike."""

from __future__ import annotations

import os

import django
from pgqd_reference.backport import alias_django_tasks

from examples.django_app.database import django_database

SUITE = os.environ.get("PGQD_REFERENCE_SUITE", "django")
if SUITE == "django":
    alias_django_tasks()  # django-tasks-db picks the backport by itself
SECRET_KEY = "reference-suites-only"
USE_TZ = True
DATABASES = {"default": django_database(os.environ.get("PGQD_REFERENCE_DSN", "postgresql://postgres@127.0.0.1/"))}
INSTALLED_APPS: list[str] = ["django_tasks"] if django.VERSION < (6,) else []
if SUITE == "tasks_db":
    # Its test module imports its models and admin, which need their apps; their tables stay empty.
    INSTALLED_APPS += ["django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes"]
    INSTALLED_APPS += ["django.contrib.messages", "django.contrib.sessions", "django_tasks_db"]
# In the daemon's workers: every alias the suites enqueue through, taking any queue (a task run there is
# labelled with the backend and queue it was enqueued with, which the workers' settings must then accept).
TASKS = {
    alias: {"BACKEND": "pgqd_reference.backends.WorkerSideBackend", "QUEUES": []}
    for alias in ("default", "immediate", "dummy")
}
if os.environ.get("PGQD_REFERENCE_ROLE") == "suite" and SUITE == "tasks_db":
    # In the suite's process: its default backend, where django-tasks-db's settings have DatabaseBackend.
    TASKS = {"default": {"BACKEND": "pgqd_reference.backends.DatabaseAdapter"}}
LOGGING_CONFIG = None
