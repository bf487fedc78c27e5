"""Enqueueing on Django's own database connection, so that ``transaction.atomic()`` covers the job."""

from __future__ import annotations

from typing import Any

from django.db import connections

from pgqd.sync_client import SyncClient

# Where a Django connection keeps its clients: building one renders every statement, which costs a fifth of an
# enqueue, so each (schema, prefix) client is kept for as long as Django keeps the same driver connection.
_CLIENTS = "_pgqd_clients"


def client(using: str = "default", *, schema: str = "public", prefix: str = "pgqd_") -> SyncClient:
    """A ``SyncClient`` on the connection of Django database ``using`` in this thread.

    Inside ``transaction.atomic(using=...)`` its enqueues join that transaction (a rollback leaves no job); outside,
    Django is in autocommit and each enqueue commits by itself. Ask for it where you use it rather than keeping it:
    Django replaces a connection it closed (``CONN_MAX_AGE``, errors), and connections belong to one thread.
    """
    wrapper = connections[using]
    wrapper.ensure_connection()
    raw = wrapper.connection
    kept: dict[tuple[str, str], tuple[Any, SyncClient]] = wrapper.__dict__.setdefault(_CLIENTS, {})
    found = kept.get((schema, prefix))
    if found is None or found[0] is not raw:
        found = (raw, SyncClient(raw, schema=schema, prefix=prefix))
        kept[(schema, prefix)] = found
    return found[1]


def enqueue(entrypoint: str, payload: Any = None, *, using: str = "default", **options: Any) -> int | None:
    """``client(using).enqueue(...)``: one job for a pgqd entrypoint, in Django's transaction if one is open."""
    return client(using).enqueue(entrypoint, payload, **options)
