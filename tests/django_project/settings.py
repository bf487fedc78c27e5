"""Settings of the test project. The database comes from $PGQD_DJANGO_TEST_DSN, so the daemon's worker
processes (which inherit the variable) use the same database as the test that started them."""

from __future__ import annotations

import os

import django

from examples.django_app.database import django_database

SECRET_KEY = "test-only"
DEBUG = False
ALLOWED_HOSTS = ["testserver"]
USE_TZ = True
ROOT_URLCONF = "tests.django_project.urls"
INSTALLED_APPS = ["django_tasks"] if django.VERSION < (6,) else []
MIDDLEWARE: list[str] = []
DATABASES = {"default": django_database(os.environ.get("PGQD_DJANGO_TEST_DSN", "postgresql://postgres@127.0.0.1/"))}
TASKS = {
    "default": {
        "BACKEND": "pgqd.contrib.django.PgqdTaskBackend",
        "QUEUES": ["default", "slow", "fragile"],
    },
    # A second alias on the same tables: its results are not the default backend's.
    "other": {"BACKEND": "pgqd.contrib.django.PgqdTaskBackend"},
}
