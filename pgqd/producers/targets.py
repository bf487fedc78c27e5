"""Recognising what a producer was given (a connection, pool, session, engine or DSN of some driver) and
wrapping it in the adapter that runs pgqd's statements on it.

Drivers are looked up in ``sys.modules`` rather than imported: an object of a driver's class exists only once
that driver has been imported, so recognising targets never imports a driver the application does not use.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from typing import Any, NamedTuple

from pgqd.backend.base import ProducerBackend
from pgqd.backend.driver_errors import missing_extra
from pgqd.backend.postgres import PostgresBackend
from pgqd.errors import PgqdError
from pgqd.identifiers import Names
from pgqd.producers.backend import DriverBackend
from pgqd.producers.executors import AsyncExecutor, SyncExecutor


class _Kind(NamedTuple):
    module: str  # the driver module that defines the class
    name: str  # the class's name in that module
    label: str  # what the class is called in messages
    blocking: bool
    adapter: str  # "module.Class" in pgqd.producers.drivers ("" for asyncpg: pgqd's own PostgresBackend)
    extra: str  # the pgqd extra that installs what the adapter needs
    needs: tuple[str, ...] = ()  # further modules the driver needs for this kind, found but not imported


_SA_ASYNC_NEEDS = ("greenlet",)

_KINDS = (
    _Kind("asyncpg", "Connection", "asyncpg Connection", False, "", ""),
    _Kind("asyncpg", "Pool", "asyncpg Pool", False, "", ""),
    _Kind("asyncpg.pool", "PoolConnectionProxy", "asyncpg pooled connection", False, "", ""),
    _Kind("psycopg", "Connection", "psycopg Connection", True, "via_psycopg.Connection", "psycopg"),
    _Kind("psycopg_pool", "ConnectionPool", "psycopg_pool ConnectionPool", True, "via_psycopg.Pool", "psycopg"),
    _Kind("psycopg", "AsyncConnection", "psycopg AsyncConnection", False, "via_psycopg.AsyncConnection", "psycopg"),
    _Kind(
        "psycopg_pool", "AsyncConnectionPool", "psycopg_pool AsyncConnectionPool", False, "via_psycopg.AsyncPool",
        "psycopg",
    ),
    _Kind("psycopg2.extensions", "connection", "psycopg2 connection", True, "via_psycopg2.Connection", "psycopg2"),
    _Kind("sqlalchemy.engine", "Connection", "SQLAlchemy Connection", True, "via_sqlalchemy.Connection", "sqlalchemy"),
    _Kind("sqlalchemy.orm", "Session", "SQLAlchemy Session", True, "via_sqlalchemy.Session", "sqlalchemy"),
    _Kind(
        "sqlalchemy.orm", "scoped_session", "SQLAlchemy scoped_session", True, "via_sqlalchemy.Session", "sqlalchemy"
    ),
    _Kind("sqlalchemy.engine", "Engine", "SQLAlchemy Engine", True, "via_sqlalchemy.Engine", "sqlalchemy"),
    _Kind(
        "sqlalchemy.ext.asyncio", "AsyncConnection", "SQLAlchemy AsyncConnection", False,
        "via_sqlalchemy.AsyncConnection", "sqlalchemy", _SA_ASYNC_NEEDS,
    ),
    _Kind(
        "sqlalchemy.ext.asyncio", "AsyncSession", "SQLAlchemy AsyncSession", False, "via_sqlalchemy.AsyncSession",
        "sqlalchemy", _SA_ASYNC_NEEDS,
    ),
    _Kind(
        "sqlalchemy.ext.asyncio", "async_scoped_session", "SQLAlchemy async_scoped_session", False,
        "via_sqlalchemy.AsyncSession", "sqlalchemy", _SA_ASYNC_NEEDS,
    ),
    _Kind(
        "sqlalchemy.ext.asyncio", "AsyncEngine", "SQLAlchemy AsyncEngine", False, "via_sqlalchemy.AsyncEngine",
        "sqlalchemy", _SA_ASYNC_NEEDS,
    ),
)  # fmt: skip


def _a(label: str) -> str:
    return f"{'an' if label[0] in 'aeiouAEIOU' else 'a'} {label}"


def _accepted(blocking: bool) -> str:
    labels = [kind.label for kind in _KINDS if kind.blocking == blocking]
    labels.append("a DSN string" if blocking else "a Backend such as pgqd.MemoryBackend")
    return _a(", ".join(labels[:-1]) + " or " + labels[-1])


def _kind_of(target: Any) -> _Kind | None:
    for kind in _KINDS:
        cls = getattr(sys.modules.get(kind.module), kind.name, None)
        if isinstance(cls, type) and isinstance(target, cls):
            return kind
    return None


def _is_backend(target: Any) -> bool:
    return all(inspect.iscoroutinefunction(getattr(target, name, None)) for name in ("enqueue", "job_states"))


def _adapter(kind: _Kind, target: Any) -> Any:
    for module in kind.needs:
        if importlib.util.find_spec(module) is None:
            raise missing_extra(module, kind.extra, _a(kind.label))
    module_name, class_name = kind.adapter.split(".")
    try:
        adapters = importlib.import_module(f"pgqd.producers.drivers.{module_name}")
    except ImportError as exc:
        raise missing_extra(exc.name or module_name, kind.extra, _a(kind.label)) from exc
    return getattr(adapters, class_name)(target)


def _type_name(target: Any) -> str:
    return f"{type(target).__module__}.{type(target).__qualname__}"


def sync_executor(target: Any) -> SyncExecutor:
    """The adapter of a ``SyncClient`` target."""
    if isinstance(target, str):
        return _owned_connection(target)
    kind = _kind_of(target)
    if kind is None:
        if _is_backend(target):
            raise PgqdError("a Backend is asynchronous: pass it to pgqd.Client, not pgqd.SyncClient")
        raise PgqdError(f"pgqd.SyncClient cannot use {_a(_type_name(target))}: pass {_accepted(blocking=True)}")
    if not kind.blocking:
        raise PgqdError(f"{_a(kind.label)} is asynchronous: pass it to pgqd.Client, not pgqd.SyncClient")
    executor: SyncExecutor = _adapter(kind, target)
    return executor


def async_backend(target: Any, names: Names) -> ProducerBackend:
    """What a ``Client`` runs on for ``target``."""
    kind = _kind_of(target)
    if kind is None:
        if _is_backend(target):
            backend: ProducerBackend = target
            return backend
        if isinstance(target, str):
            raise PgqdError(
                "pgqd.Client needs a connection or pool, not a DSN string: pass asyncpg.connect(dsn) or "
                "asyncpg.create_pool(dsn), or use pgqd.SyncClient(dsn) for a blocking client"
            )
        raise PgqdError(f"pgqd.Client cannot use {_a(_type_name(target))}: pass {_accepted(blocking=False)}")
    if kind.blocking:
        raise PgqdError(f"{_a(kind.label)} is blocking: pass it to pgqd.SyncClient, not pgqd.Client")
    if not kind.adapter:
        return PostgresBackend(target, names)
    executor: AsyncExecutor = _adapter(kind, target)
    return DriverBackend(executor, names)


def _owned_connection(dsn: str) -> SyncExecutor:
    for module, extra in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
        if importlib.util.find_spec(module) is not None:
            try:
                adapter = importlib.import_module(f"pgqd.producers.drivers.via_{module}")
            except ImportError as exc:
                raise missing_extra(exc.name or module, extra, "pgqd.SyncClient(dsn)") from exc
            executor: SyncExecutor = adapter.OwnedConnection(dsn)
            return executor
    raise missing_extra("psycopg", "psycopg", "pgqd.SyncClient(dsn)")
