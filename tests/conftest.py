"""Shared fixtures: a PostgreSQL server, a template database with pgqd installed, and one fresh database per
test cloned from it (cheap, and no test sees another's rows)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from pgqd import Client, ManualClock, MemoryBackend, PostgresBackend
from pgqd.backend.base import Backend
from pgqd.daemon.logs import configure_logging
from pgqd.schema import install
from tests.support.daemon import Daemon, StartDaemon
from tests.support.daemon_app import CREATE_RUNS
from tests.support.databases import TestServer, with_database
from tests.support.time_passes import TimePasses

configure_logging("warning", "json")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A DSN of the maintenance database of the server the tests use."""
    server = TestServer()
    try:
        yield server.dsn
    finally:
        server.stop()


@pytest.fixture(scope="session")
async def template_database(pg_server: str) -> AsyncIterator[str]:
    name = f"pgqd_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = await asyncpg.connect(pg_server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        conn = await asyncpg.connect(with_database(pg_server, name))
        try:
            await install(conn)
        finally:
            await conn.close()
        yield name
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def empty_dsn(pg_server: str) -> AsyncIterator[str]:
    """A fresh database without pgqd installed."""
    async with _database(pg_server, None) as dsn:
        yield dsn


@pytest.fixture
async def db_dsn(pg_server: str, template_database: str) -> AsyncIterator[str]:
    """A fresh database with pgqd installed in schema public, prefix pgqd_."""
    async with _database(pg_server, template_database) as dsn:
        yield dsn


class _database:
    def __init__(self, server: str, template: str | None) -> None:
        self.server = server
        self.template = template
        self.name = f"pgqd_t_{os.getpid()}_{uuid.uuid4().hex[:8]}"

    async def __aenter__(self) -> str:
        admin = await asyncpg.connect(self.server)
        try:
            template = f' TEMPLATE "{self.template}"' if self.template else ""
            await admin.execute(f'CREATE DATABASE "{self.name}"{template}')
        finally:
            await admin.close()
        return with_database(self.server, self.name)

    async def __aexit__(self, *_exc: object) -> None:
        admin = await asyncpg.connect(self.server)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
async def conn(db_dsn: str) -> AsyncIterator[Any]:
    connection = await asyncpg.connect(db_dsn)
    yield connection
    await connection.close()


@pytest.fixture(params=["postgres", "memory"])
async def backend(request: pytest.FixtureRequest, pg_server: str, template_database: str) -> AsyncIterator[Backend]:
    """Each behavioural test runs twice: on PostgreSQL and on the in-memory backend."""
    if request.param == "memory":
        # Time runs as usual, and tests that wait for it to pass skip ahead instead (the ``time_passes`` fixture).
        memory = MemoryBackend(clock=ManualClock(running=True))
        yield memory
        await memory.close()
        return
    # The database is created here rather than through request.getfixturevalue("db_dsn"): an async fixture
    # cannot be set up from inside another one's running event loop.
    async with _database(pg_server, template_database) as dsn:
        postgres = await PostgresBackend.open(dsn, pool_size=4)
        try:
            yield postgres
        finally:
            await postgres.close()


@pytest.fixture
def time_passes(backend: Backend) -> TimePasses:
    return TimePasses(backend)


@pytest.fixture
async def client(backend: Backend) -> AsyncIterator[Client]:
    async with Client(backend, wait_poll_interval=0.5) as producer:
        yield producer


@pytest.fixture
async def db(db_dsn: str) -> AsyncIterator[Any]:
    """A connection to the test database, with the table the daemon tests' handlers record their runs in."""
    connection = await asyncpg.connect(db_dsn)
    await connection.execute(CREATE_RUNS)
    yield connection
    await connection.close()


@pytest.fixture
def start_daemon(db_dsn: str, tmp_path: Path) -> Iterator[StartDaemon]:
    """Starts real ``pgqd`` daemons on the test database (or ``dsn``); stops them all after the test."""
    started: list[Daemon] = []

    def start(config: str, env: dict[str, str] | None = None, dsn: str | None = None) -> Daemon:
        path = tmp_path / f"queue{len(started)}.toml"
        path.write_text(config)
        daemon = Daemon(path, dsn or db_dsn, env).start()
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop(timeout=15)
