"""The producer targets that benchmarks/enqueue.py measures side by side: each opens its connection, session or
pool the way an application does, and commits every call (autocommit, or a commit after each call)."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import asyncpg
import psycopg
import psycopg2
import psycopg_pool
import sqlalchemy
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from pgqd import Client, JobSpec, SyncClient


class Producer:
    """One client on one target; ``after_call`` commits where the target holds a transaction open."""

    def __init__(self, client: Any, after_call: Callable[[], Any] | None = None) -> None:
        self.client = client
        self.after_call = after_call

    async def enqueue_many(self, specs: Sequence[JobSpec]) -> None:
        await _settle(self.client.enqueue_many(specs))
        if self.after_call is not None:
            await _settle(self.after_call())

    async def enqueue(self) -> None:
        await _settle(self.client.enqueue("bench", b"{}"))
        if self.after_call is not None:
            await _settle(self.after_call())


async def _settle(result: Any) -> Any:
    return await result if inspect.isawaitable(result) else result


def _url(dsn: str, driver: str) -> str:
    return dsn.replace("postgresql://", f"postgresql+{driver}://", 1)


@asynccontextmanager
async def _asyncpg(dsn: str) -> AsyncIterator[Producer]:
    conn = await asyncpg.connect(dsn)
    try:
        yield Producer(Client(conn))
    finally:
        await conn.close()


@asynccontextmanager
async def _psycopg(dsn: str) -> AsyncIterator[Producer]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield Producer(SyncClient(conn))


@asynccontextmanager
async def _psycopg_pool(dsn: str) -> AsyncIterator[Producer]:
    with psycopg_pool.ConnectionPool(dsn, min_size=1, max_size=1, open=True) as pool:
        yield Producer(SyncClient(pool))


@asynccontextmanager
async def _psycopg_async(dsn: str) -> AsyncIterator[Producer]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        yield Producer(Client(conn))


@asynccontextmanager
async def _psycopg2(dsn: str) -> AsyncIterator[Producer]:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        yield Producer(SyncClient(conn))
    finally:
        conn.close()


@asynccontextmanager
async def _dsn(dsn: str) -> AsyncIterator[Producer]:
    with SyncClient(dsn) as client:
        yield Producer(client)


def _sa_session(driver: str) -> Callable[[str], AbstractAsyncContextManager[Producer]]:
    @asynccontextmanager
    async def session_producer(dsn: str) -> AsyncIterator[Producer]:
        engine = sqlalchemy.create_engine(_url(dsn, driver))
        try:
            with Session(engine) as session:
                yield Producer(SyncClient(session), session.commit)
        finally:
            engine.dispose()

    return session_producer


def _sa_async_session(driver: str) -> Callable[[str], AbstractAsyncContextManager[Producer]]:
    @asynccontextmanager
    async def session_producer(dsn: str) -> AsyncIterator[Producer]:
        engine = create_async_engine(_url(dsn, driver))
        try:
            async with AsyncSession(engine) as session:
                yield Producer(Client(session), session.commit)
        finally:
            await engine.dispose()

    return session_producer


BASELINE = "asyncpg"
TARGETS: dict[str, Callable[[str], AbstractAsyncContextManager[Producer]]] = {
    BASELINE: _asyncpg,
    "psycopg": _psycopg,
    "psycopg-async": _psycopg_async,
    "psycopg-pool": _psycopg_pool,
    "psycopg2": _psycopg2,
    "dsn": _dsn,
    "sqlalchemy-session-psycopg": _sa_session("psycopg"),
    "sqlalchemy-session-psycopg2": _sa_session("psycopg2"),
    "sqlalchemy-async-session-asyncpg": _sa_async_session("asyncpg"),
    "sqlalchemy-async-session-psycopg": _sa_async_session("psycopg"),
}
