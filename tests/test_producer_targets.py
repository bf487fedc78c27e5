"""Which targets each client takes, and the errors for everything else: the wrong client, an unsupported
object, a missing driver, an aborted transaction, a database that is not there. Also the one SQL text per
statement that every driver runs, and the core install importing no optional driver."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import psycopg
import psycopg2
import pytest
import sqlalchemy
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from pgqd import BackendUnavailable, Client, MemoryBackend, PgqdError, SyncClient
from pgqd.backend.driver_errors import missing_extra
from pgqd.producers.owned_bounds import with_default_bounds
from pgqd.producers.placeholders import bind
from pgqd.sql import statements

SYNC_KINDS = "pass a psycopg Connection, psycopg_pool ConnectionPool, psycopg2 connection, SQLAlchemy Connection"
ASYNC_KINDS = "pass an asyncpg Connection, asyncpg Pool, asyncpg pooled connection, psycopg AsyncConnection"


def test_every_statement_parameter_has_an_explicit_cast() -> None:
    for name, text in vars(statements).items():
        if name.isupper() and isinstance(text, str):
            uncast = re.findall(r"\$\d+(?!\d)(?!::)", text)
            assert not uncast, f"{name}: {uncast}"


@pytest.mark.parametrize(
    ("paramstyle", "sql", "params"),
    [
        ("numeric_dollar", "SELECT $1::int, $2::text, $1::int", (1, "a")),
        ("pyformat", "SELECT %(p1)s::int, %(p2)s::text, %(p1)s::int, 'a%%b'", {"p1": 1, "p2": "a"}),
        ("psycopg_binary", "SELECT %(p1)b::int, %(p2)b::text, %(p1)b::int, 'a%%b'", {"p1": 1, "p2": "a"}),
        ("format", "SELECT %s::int, %s::text, %s::int, 'a%%b'", (1, "a", 1)),
        ("qmark", "SELECT ?::int, ?::text, ?::int, 'a%b'", (1, "a", 1)),
        ("named", "SELECT :p1::int, :p2::text, :p1::int, 'a%b'", {"p1": 1, "p2": "a"}),
    ],
)
def test_placeholders_are_written_in_the_drivers_paramstyle(paramstyle: str, sql: str, params: Any) -> None:
    source = "SELECT $1::int, $2::text, $1::int" + ("" if paramstyle == "numeric_dollar" else ", 'a%b'")
    assert bind(source, (1, "a"), paramstyle) == (sql, params)


def test_importing_pgqd_imports_no_optional_driver() -> None:
    code = (
        "import sys, pgqd; pgqd.SyncClient; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'psycopg', 'psycopg2', 'psycopg_pool', 'sqlalchemy'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_missing_driver_error_names_the_extra() -> None:
    error = missing_extra("psycopg", "psycopg", "pgqd.SyncClient(dsn)")
    assert isinstance(error, PgqdError)
    assert str(error) == (
        "pgqd.SyncClient(dsn) needs the psycopg package, which is not installed: pip install 'pgqd[psycopg]'"
    )


@pytest.fixture
def sync_targets(db_dsn: str) -> Iterator[dict[str, Any]]:
    conn = psycopg.connect(db_dsn)
    conn2 = psycopg2.connect(db_dsn)
    engine = sqlalchemy.create_engine(db_dsn.replace("postgresql://", "postgresql+psycopg2://"))
    session = Session(engine)
    yield {"psycopg Connection": conn, "psycopg2 connection": conn2, "SQLAlchemy Session": session}
    session.close()
    engine.dispose()
    conn.close()
    conn2.close()


@pytest.fixture
async def async_targets(db_dsn: str) -> AsyncIterator[dict[str, Any]]:
    conn = await asyncpg.connect(db_dsn)
    aconn = await psycopg.AsyncConnection.connect(db_dsn)
    engine = create_async_engine(db_dsn.replace("postgresql://", "postgresql+asyncpg://"))
    session = AsyncSession(engine)
    yield {"asyncpg Connection": conn, "psycopg AsyncConnection": aconn, "SQLAlchemy AsyncSession": session}
    await session.close()
    await engine.dispose()
    await aconn.close()
    await conn.close()


def test_a_blocking_target_given_to_client_is_refused(sync_targets: dict[str, Any]) -> None:
    for label, target in sync_targets.items():
        with pytest.raises(PgqdError, match=f"^a {label} is blocking: pass it to pgqd.SyncClient, not pgqd.Client$"):
            Client(target)


async def test_an_async_target_given_to_sync_client_is_refused(async_targets: dict[str, Any]) -> None:
    for label, target in {**async_targets, "a Backend": MemoryBackend()}.items():
        article = "" if label == "a Backend" else "an " if label.startswith("asyncpg") else "a "
        expected = f"^{article}{label} is asynchronous: pass it to pgqd.Client"
        with pytest.raises(PgqdError, match=expected):
            SyncClient(target)


def test_unsupported_targets_are_refused_with_the_accepted_kinds(db_dsn: str) -> None:
    for target in (object(), 42, None):
        with pytest.raises(PgqdError, match=f"^pgqd.SyncClient cannot use a builtins.\\w+: {SYNC_KINDS}") as raised:
            SyncClient(target)
        assert str(raised.value).endswith(
            "SQLAlchemy Session, SQLAlchemy scoped_session, SQLAlchemy Engine or a DSN string"
        )
        with pytest.raises(PgqdError, match=f"^pgqd.Client cannot use a builtins.\\w+: {ASYNC_KINDS}") as raised:
            Client(target)
        assert str(raised.value).endswith("SQLAlchemy AsyncEngine or a Backend such as pgqd.MemoryBackend")
    with pytest.raises(PgqdError, match=r"pgqd\.Client needs a connection or pool, not a DSN string"):
        Client(db_dsn)
    with pytest.raises(PgqdError, match="pgqd needs PostgreSQL, and this SQLAlchemy target speaks sqlite"):
        SyncClient(sqlalchemy.create_engine("sqlite://")).enqueue("mail")


def test_an_aborted_transaction_is_reported_plainly(sync_targets: dict[str, Any]) -> None:
    for label, target in sync_targets.items():
        execute = target.cursor().execute if label != "SQLAlchemy Session" else target.execute
        with pytest.raises(Exception, match="division by zero"):
            execute(sqlalchemy.text("SELECT 1/0") if label == "SQLAlchemy Session" else "SELECT 1/0")
        with pytest.raises(PgqdError, match=r"transaction on this connection was aborted .* roll back") as raised:
            SyncClient(target).enqueue("mail")
        assert "InFailedSqlTransaction: current transaction is aborted" in str(raised.value)
        target.rollback()
        assert SyncClient(target).enqueue("mail")


async def test_an_aborted_transaction_is_reported_plainly_by_the_async_client(async_targets: dict[str, Any]) -> None:
    conn = async_targets["asyncpg Connection"]
    async with conn.transaction():
        with pytest.raises(asyncpg.DivisionByZeroError):
            await conn.execute("SELECT 1/0")
        with pytest.raises(PgqdError, match="transaction on this connection was aborted") as raised:
            await Client(conn).enqueue("mail")
        assert "InFailedSQLTransactionError" in str(raised.value)
    aconn = async_targets["psycopg AsyncConnection"]
    with pytest.raises(psycopg.errors.DivisionByZero):
        await aconn.execute("SELECT 1/0")
    with pytest.raises(PgqdError, match="transaction on this connection was aborted"):
        await Client(aconn).enqueue("mail")


def test_an_unreachable_database_is_backend_unavailable() -> None:
    unreachable = "postgresql://postgres@127.0.0.1:1/nowhere?connect_timeout=2"
    with SyncClient(unreachable) as client, pytest.raises(BackendUnavailable, match="unavailable: OperationalError"):
        client.enqueue("mail")


async def test_a_dsn_client_reconnects_after_its_connection_broke(db_dsn: str, conn: Any) -> None:
    with SyncClient(db_dsn) as client:
        first = client.enqueue("mail")
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pgqd-producer'"
        )
        with pytest.raises(BackendUnavailable):
            client.enqueue("mail")
        second = client.enqueue("mail")
    assert await conn.fetchval("SELECT count(*) FROM pgqd_jobs WHERE id = ANY($1::bigint[])", [first, second]) == 2


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_the_connection_of_a_dsn_client_is_opened_with_bounds_unless_its_dsn_sets_them(
    db_dsn: str, driver: str
) -> None:
    """pgqd's own connection connects within 10 s and gives a dead link up (unacknowledged data after 30 s, an
    idle link after 3 keepalive probes), with both drivers; what the DSN sets wins."""
    owned = importlib.import_module(f"pgqd.producers.drivers.via_{driver}").OwnedConnection
    for dsn, connect_timeout in ((db_dsn, "10"), (db_dsn + "?connect_timeout=3", "3")):
        connection = owned(dsn)
        try:
            assert connection.fetch("SELECT 1", ()) == [(1,)]
            raw = connection._conn
            opened = raw.info.get_parameters() if driver == "psycopg" else raw.get_dsn_parameters()
        finally:
            connection.close()
        bounds = {key: opened.get(key) for key in ("connect_timeout", "tcp_user_timeout", "keepalives_idle")}
        assert bounds == {"connect_timeout": connect_timeout, "tcp_user_timeout": "30000", "keepalives_idle": "10"}


async def test_a_dsn_client_that_waits_on_a_lock_ends_at_its_statement_timeout_and_goes_on(
    db_dsn: str, conn: Any
) -> None:
    with SyncClient(db_dsn + "?options=-c%20statement_timeout%3D1000") as client:
        async with conn.transaction():
            await conn.execute("LOCK TABLE pgqd_jobs IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(BackendUnavailable, match="canceling statement due to statement timeout"):
                client.enqueue("mail")
        client.enqueue("mail")
    assert await conn.fetchval("SELECT count(*) FROM pgqd_jobs") == 1


@pytest.mark.parametrize(
    ("params", "environment", "expected"),
    [
        ({"host": "db"}, {}, {"connect_timeout": "10", "tcp_user_timeout": "30000", "keepalives_count": "3"}),
        ({"connect_timeout": "3", "tcp_user_timeout": "0"}, {}, {"connect_timeout": "3", "tcp_user_timeout": "0"}),
        ({"host": "db"}, {"PGCONNECT_TIMEOUT": "4"}, {"connect_timeout": None, "tcp_user_timeout": "30000"}),
        ({"service": "queue"}, {}, {"connect_timeout": None, "tcp_user_timeout": None}),
        ({"host": "db"}, {"PGSERVICE": "queue"}, {"connect_timeout": None, "keepalives_idle": None}),
        # No startup option: a pooler may refuse it, and it would override the role's statement_timeout.
        ({"host": "db"}, {}, {"options": None}),
    ],
)
def test_the_bounds_of_a_dsn_client_leave_what_the_dsn_environment_or_service_sets(
    monkeypatch: pytest.MonkeyPatch, params: dict[str, str], environment: dict[str, str], expected: dict[str, str]
) -> None:
    for name in ("PGCONNECT_TIMEOUT", "PGSERVICE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    bounded = with_default_bounds(params)
    assert {key: bounded.get(key) for key in expected} == expected
