"""Enqueueing on Django's own database connection, so that ``transaction.atomic()`` covers the job."""

from __future__ import annotations

from typing import Any

from django.db import connections

from pgqd.sync_client import SyncClient


def client(using: str = "default", *, schema: str = "public", prefix: str = "pgqd_") -> SyncClient:
    """A ``SyncClient`` on the connection of Django database ``using`` in this thread.

    Inside ``transaction.atomic(using=...)`` its enqueues join that transaction (a rollback leaves no job); outside,
    Django is in autocommit and each enqueue commits by itself. Make one per use: Django opens a new connection
    after closing an old one, and this client would keep the old one.
    """
    connection = connections[using]
    connection.ensure_connection()
    return SyncClient(connection.connection, schema=schema, prefix=prefix)


def enqueue(entrypoint: str, payload: Any = None, *, using: str = "default", **options: Any) -> int | None:
    """``client(using).enqueue(...)``: one job for a pgqd entrypoint, in Django's transaction if one is open."""
    return client(using).enqueue(entrypoint, payload, **options)
