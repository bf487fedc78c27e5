"""Settings of the example project. The database is $PGQD_DSN, else the example daemon's embedded server (so
start `scripts/run-example` first), else a local server."""

from __future__ import annotations

import os
from pathlib import Path

import django

from examples.django_app.database import django_database
from pgqd.daemon.embedded import running_dsn

REPO = Path(__file__).resolve().parents[2]
DSN = (
    os.environ.get("PGQD_DSN")
    or running_dsn(REPO / ".pgqd" / "pgdata")
    or "postgresql://postgres@127.0.0.1:5432/postgres"
)

SECRET_KEY = "example-only-not-secret"
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
USE_TZ = True
ROOT_URLCONF = "examples.django_app.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Django 5.2 takes the Tasks framework from the django-tasks backport; Django 6 has it built in.
INSTALLED_APPS = [*(["django_tasks"] if django.VERSION < (6,) else []), "examples.django_app"]
DATABASES = {"default": django_database(DSN)}

# Tasks become pgqd jobs on the default database; the daemon's [django] section runs them. Queue "default" is
# pgqd entrypoint "django.default".
TASKS = {"default": {"BACKEND": "pgqd.contrib.django.PgqdTaskBackend"}}
