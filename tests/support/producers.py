"""Producer targets of every kind, opened the way applications open them, and an idle daemon to prove that a
committed job wakes it through NOTIFY (its poll interval is a minute, so nothing else could)."""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import psycopg2
import psycopg_pool
import pytest
import sqlalchemy
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from pgqd import Client, SyncClient
from pgqd.identifiers import Names
from tests.conftest import _database
from tests.support.daemon import Daemon, daemon_config
from tests.support.daemon_app import CREATE_RUNS
from tests.support.waiting import wait_until

CHANNEL = Names().channel
HELD_AND_MEASURED = """
[entrypoints.held]
handler = "tests.support.daemon_app:raises_keyboard_interrupt"
on_failure = "hold"

[entrypoints.measured]
handler = "tests.support.daemon_app:measures_payload"
store_result = true
"""
IDLE_DAEMON_CONFIG = daemon_config(processes=1, extra=HELD_AND_MEASURED).replace(
    'poll_interval = "1s"', 'poll_interval = "60s"'
)


async def call(result: Any) -> Any:
    """The value of a client call, sync or async: tests run one body against both clients."""
    return await result if inspect.isawaitable(result) else result


async def job_ran(db: Any, job_id: int) -> bool:
    return bool(await db.fetchval("SELECT EXISTS (SELECT 1 FROM test_runs WHERE job_id = $1)", job_id))


async def job_exists(db: Any, job_id: int) -> bool:
    return bool(
        await db.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pgqd_jobs WHERE id = $1) OR EXISTS (SELECT 1 FROM pgqd_log WHERE job_id = $1)"
            " OR EXISTS (SELECT 1 FROM test_runs WHERE job_id = $1)",
            job_id,
        )
    )


@pytest.fixture(scope="module")
async def queue_dsn(pg_server: str, template_database: str) -> AsyncIterator[str]:
    """One database for a module's tests (they tell their jobs apart by id)."""
    async with _database(pg_server, template_database) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(CREATE_RUNS)
        finally:
            await conn.close()
        yield dsn


def _config_file(directory: Path) -> Path:
    path = directory / "queue.toml"
    path.write_text(IDLE_DAEMON_CONFIG)
    return path


@pytest.fixture(scope="module")
async def idle_daemon(queue_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Daemon]:
    """A running daemon that has gone idle: its workers listen, and would poll only after a minute."""
    daemon = Daemon(_config_file(tmp_path_factory.mktemp("producers")), queue_dsn).start()
    conn = await asyncpg.connect(queue_dsn)
    try:
        await asyncio.to_thread(daemon.wait_ready)
        # A worker subscribes before its first claim, so this job runs soon whenever it lands; once it has
        # run, the worker is listening.
        warm_up = await Client(conn).enqueue("sleeper")
        await wait_until(lambda: job_ran(conn, warm_up), timeout=30, what="the warm-up job")
        yield daemon
    finally:
        await conn.close()
        await asyncio.to_thread(daemon.stop, 15)


@pytest.fixture
async def queue_db(queue_dsn: str) -> AsyncIterator[Any]:
    conn = await asyncpg.connect(queue_dsn)
    yield conn
    await conn.close()


class Notices:
    """What arrives on the events channel. ``until_marker`` sends a marker NOTIFY from another session and
    returns what arrived before it: notifications are delivered in commit order, so anything committed before
    the marker shows up."""

    def __init__(self, listener: Any, sender: Any) -> None:
        self.listener = listener
        self.sender = sender
        self.payloads: list[str] = []

    def on_notice(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self.payloads.append(payload)

    async def until_marker(self) -> list[str]:
        marker = f"marker-{uuid.uuid4().hex}"
        await self.sender.execute("SELECT pg_notify($1, $2)", CHANNEL, marker)
        await wait_until(lambda: _contains(self.payloads, marker), timeout=10, what="the marker notification")
        before = self.payloads[: self.payloads.index(marker)]
        self.payloads.clear()
        return before


async def _contains(payloads: list[str], marker: str) -> bool:
    return marker in payloads


@pytest.fixture
async def notices(queue_dsn: str, queue_db: Any) -> AsyncIterator[Notices]:
    listener = await asyncpg.connect(queue_dsn)
    seen = Notices(listener, queue_db)
    await listener.add_listener(CHANNEL, seen.on_notice)
    yield seen
    await listener.close()


def _url(dsn: str, driver: str) -> str:
    return dsn.replace("postgresql://", f"postgresql+{driver}://", 1)


# --- targets with a transaction of the caller's: each begins one, enqueues, then commits or rolls back --------
Transactional = Callable[[str, bool], Awaitable[int]]


def _end(owner: Any, commit: bool) -> Any:
    return owner.commit() if commit else owner.rollback()


async def _psycopg(dsn: str, commit: bool) -> int:
    with psycopg.connect(dsn) as conn:
        job: int = SyncClient(conn).enqueue("sleeper")
        _end(conn, commit)
    return job


async def _psycopg_transaction_block(dsn: str, commit: bool) -> int:
    class Rollback(Exception):
        pass

    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            with conn.transaction():
                job: int = SyncClient(conn).enqueue("sleeper")
                if not commit:
                    raise Rollback
        except Rollback:
            pass
    return job


async def _psycopg2(dsn: str, commit: bool) -> int:
    conn = psycopg2.connect(dsn)
    try:
        job: int = SyncClient(conn).enqueue("sleeper")
        _end(conn, commit)
    finally:
        conn.close()
    return job


async def _sa_connection(dsn: str, commit: bool) -> int:
    engine = sqlalchemy.create_engine(_url(dsn, "psycopg"))
    try:
        with engine.connect() as conn:
            job: int = SyncClient(conn).enqueue("sleeper")
            _end(conn, commit)
    finally:
        engine.dispose()
    return job


def _sa_session(driver: str) -> Transactional:
    async def run(dsn: str, commit: bool) -> int:
        engine = sqlalchemy.create_engine(_url(dsn, driver))
        try:
            # A fresh session has not begun its transaction yet: the enqueue must begin it, not run beside it.
            with Session(engine) as session:
                job: int = SyncClient(session).enqueue("sleeper")
                _end(session, commit)
        finally:
            engine.dispose()
        return job

    return run


async def _sa_scoped_session(dsn: str, commit: bool) -> int:
    engine = sqlalchemy.create_engine(_url(dsn, "psycopg2"))
    scoped = scoped_session(sessionmaker(engine))
    try:
        job: int = SyncClient(scoped).enqueue("sleeper")
        _end(scoped, commit)
    finally:
        scoped.remove()
        engine.dispose()
    return job


async def _asyncpg(dsn: str, commit: bool) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        transaction = conn.transaction()
        await transaction.start()
        job: int = await Client(conn).enqueue("sleeper")
        await _end(transaction, commit)
    finally:
        await conn.close()
    return job


async def _asyncpg_pooled(dsn: str, commit: bool) -> int:
    async with asyncpg.create_pool(dsn, min_size=1, max_size=1) as pool, pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        job: int = await Client(conn).enqueue("sleeper")
        await _end(transaction, commit)
    return job


async def _psycopg_async(dsn: str, commit: bool) -> int:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        job: int = await Client(conn).enqueue("sleeper")
        await _end(conn, commit)
    return job


async def _sa_async_connection(dsn: str, commit: bool) -> int:
    engine = create_async_engine(_url(dsn, "asyncpg"))
    try:
        async with engine.connect() as conn:
            job: int = await Client(conn).enqueue("sleeper")
            await _end(conn, commit)
    finally:
        await engine.dispose()
    return job


def _sa_async_session(driver: str) -> Transactional:
    async def run(dsn: str, commit: bool) -> int:
        engine = create_async_engine(_url(dsn, driver))
        try:
            async with AsyncSession(engine) as session:
                job: int = await Client(session).enqueue("sleeper")
                await _end(session, commit)
        finally:
            await engine.dispose()
        return job

    return run


TRANSACTIONAL: dict[str, Transactional] = {
    "psycopg-connection": _psycopg,
    "psycopg-transaction-block": _psycopg_transaction_block,
    "psycopg2-connection": _psycopg2,
    "sqlalchemy-connection-psycopg": _sa_connection,
    "sqlalchemy-session-psycopg": _sa_session("psycopg"),
    "sqlalchemy-session-psycopg2": _sa_session("psycopg2"),
    "sqlalchemy-scoped-session-psycopg2": _sa_scoped_session,
    "asyncpg-connection": _asyncpg,
    "asyncpg-pooled-connection": _asyncpg_pooled,
    "psycopg-async-connection": _psycopg_async,
    "sqlalchemy-async-connection-asyncpg": _sa_async_connection,
    "sqlalchemy-async-session-asyncpg": _sa_async_session("asyncpg"),
    "sqlalchemy-async-session-psycopg": _sa_async_session("psycopg"),
}


# --- targets that commit each call by themselves: pools, engines, autocommit connections, a DSN ------------------
@asynccontextmanager
async def _dsn(dsn: str) -> AsyncIterator[Any]:
    with SyncClient(dsn) as client:
        yield client


@asynccontextmanager
async def _psycopg_autocommit(dsn: str) -> AsyncIterator[Any]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield SyncClient(conn)


@asynccontextmanager
async def _psycopg2_autocommit(dsn: str) -> AsyncIterator[Any]:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        yield SyncClient(conn)
    finally:
        conn.close()


@asynccontextmanager
async def _psycopg_pool(dsn: str) -> AsyncIterator[Any]:
    with psycopg_pool.ConnectionPool(dsn, min_size=1, max_size=2, open=True) as pool:
        yield SyncClient(pool)


@asynccontextmanager
async def _sa_engine(dsn: str) -> AsyncIterator[Any]:
    engine = sqlalchemy.create_engine(_url(dsn, "psycopg2"))
    try:
        yield SyncClient(engine)
    finally:
        engine.dispose()


@asynccontextmanager
async def _asyncpg_pool(dsn: str) -> AsyncIterator[Any]:
    async with asyncpg.create_pool(dsn, min_size=1, max_size=2) as pool, Client(pool) as client:
        # Closing the client ends the LISTEN that ``wait`` borrowed a pooled connection for.
        yield client


@asynccontextmanager
async def _psycopg_async_pool(dsn: str) -> AsyncIterator[Any]:
    async with psycopg_pool.AsyncConnectionPool(dsn, min_size=1, max_size=2, open=False) as pool:
        yield Client(pool)


@asynccontextmanager
async def _sa_async_engine(dsn: str) -> AsyncIterator[Any]:
    engine = create_async_engine(_url(dsn, "asyncpg"))
    try:
        yield Client(engine)
    finally:
        await engine.dispose()


AUTOCOMMIT: dict[str, Callable[[str], AbstractAsyncContextManager[Any]]] = {
    "dsn": _dsn,
    "psycopg-autocommit-connection": _psycopg_autocommit,
    "psycopg2-autocommit-connection": _psycopg2_autocommit,
    "psycopg-pool": _psycopg_pool,
    "sqlalchemy-engine-psycopg2": _sa_engine,
    "asyncpg-pool": _asyncpg_pool,
    "psycopg-async-pool": _psycopg_async_pool,
    "sqlalchemy-async-engine-asyncpg": _sa_async_engine,
}
