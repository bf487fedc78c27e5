"""Every database call of a worker has a time bound, and a connection that stops answering is replaced."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pgqd import Client, PostgresBackend
from pgqd.backend.bounded import DatabaseTimeouts
from pgqd.config.load import parse_config
from pgqd.daemon.supervisor.runtime import database_timeouts
from pgqd.errors import BackendUnavailable
from pgqd.models import Event, WorkerInfo
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until

TIMEOUTS = DatabaseTimeouts(command=1.0, connect=2.0, probe_every=0.5)
HANDLER = '[entrypoints.a]\nhandler = "tests.support.daemon_app:sleeper"\n'


@pytest.fixture
async def proxied(db_dsn: str) -> AsyncIterator[tuple[TcpProxy, PostgresBackend]]:
    with TcpProxy.for_dsn(db_dsn) as proxy:
        backend = await PostgresBackend.open(proxy.route(db_dsn), pool_size=2, timeouts=TIMEOUTS)
        try:
            yield proxy, backend
        finally:
            await asyncio.wait_for(backend.close(), 10)


def test_the_command_timeout_follows_worker_timeout_unless_set() -> None:
    assert database_timeouts(parse_config(HANDLER)).command == 7.5
    assert database_timeouts(parse_config('[workers]\nworker_timeout = "2s"\n' + HANDLER)).command == 1.0
    assert database_timeouts(parse_config('[workers]\nworker_timeout = "10m"\n' + HANDLER)).command == 15.0
    chosen = database_timeouts(parse_config('[database]\ncommand_timeout = "3s"\nconnect_timeout = "1s"\n' + HANDLER))
    assert (chosen.command, chosen.connect) == (3.0, 1.0)


async def test_worker_connections_carry_a_statement_timeout_and_tcp_keepalives(
    proxied: tuple[TcpProxy, PostgresBackend],
) -> None:
    _, backend = proxied
    assert await backend._db.fetchval("SHOW statement_timeout") == "1s"
    # Nor JIT: over a deep backlog the claim's generic plan passes its cost thresholds (docs/performance.md).
    assert await backend._db.fetchval("SHOW jit") == "off"
    async with backend._db.acquire() as conn:
        sock = conn._transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 2000
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 1


async def test_a_heartbeat_on_a_dead_connection_fails_in_time_and_the_next_uses_a_new_one(
    proxied: tuple[TcpProxy, PostgresBackend],
) -> None:
    proxy, backend = proxied
    info = WorkerInfo("host", 1, ("a",))
    worker_id = await backend.register_worker(info)
    assert proxy.blackhole_open() >= 1
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="command_timeout"):
        await asyncio.wait_for(backend.heartbeat(worker_id, info), 10)
    assert time.monotonic() - started < TIMEOUTS.command + 1.0
    assert not backend.health.available
    # The dead connection was closed, not handed out again: the next call succeeds at once.
    started = time.monotonic()
    assert (await asyncio.wait_for(backend.heartbeat(worker_id, info), 10)).cancel == []
    assert time.monotonic() - started < TIMEOUTS.command
    assert backend.health.available


async def test_the_listener_notices_a_silent_connection_and_says_it_reconnected(
    proxied: tuple[TcpProxy, PostgresBackend],
) -> None:
    proxy, backend = proxied
    events: list[Event] = []
    subscription = await backend.subscribe(events.append)
    try:
        proxy.blackhole_open()

        async def reconnected() -> Any:
            return [e for e in events if e.kind == "reconnected"]

        await wait_until(reconnected, timeout=TIMEOUTS.probe_every + TIMEOUTS.command + 5, what="a reconnect")
    finally:
        await asyncio.wait_for(subscription.close(), 10)


async def test_the_workers_pool_gives_connections_back_without_a_reset_round_trip(db_dsn: str, conn: Any) -> None:
    # asyncpg's default reset sends a statement after every use; pgqd's pool keeps no session state to undo.
    backend = await PostgresBackend.open(db_dsn, pool_size=1, application_name="pgqd-reset-check", timeouts=TIMEOUTS)
    try:
        await backend.job_states([1])
        last = await conn.fetchval(
            "SELECT query FROM pg_stat_activity WHERE application_name = 'pgqd-reset-check' AND state = 'idle'"
        )
        assert last is not None
        assert "RESET ALL" not in last
        assert "job_id" in last or "FROM" in last
    finally:
        await asyncio.wait_for(backend.close(), 10)


async def test_each_pooled_connection_is_ready_to_claim_and_flush_before_its_first_use(db_dsn: str, conn: Any) -> None:
    # The first claim on a connection used to pay for preparing it, looking up its types and compiling the claim
    # function: 10-30 ms, the worst pickups there were. The warm-up runs both calls, acting on no job.
    job_id = await Client(conn).enqueue("a")
    backend = await PostgresBackend.open(db_dsn, pool_size=3, timeouts=TIMEOUTS, warm=True)
    try:
        pool = backend._db.pool
        held = [await asyncio.wait_for(pool.acquire(), 10) for _ in range(3)]
        assert pool.lend_idle() is None
        try:
            for pooled in held:
                prepared = [row[0] for row in await pooled.fetch("SELECT statement FROM pg_prepared_statements")]
                assert any(backend.sql.claim_jobs.strip() in text for text in prepared)
                assert any(backend.sql.record_outcomes.strip() in text for text in prepared)
        finally:
            for pooled in held:
                pool.release(pooled)
    finally:
        await asyncio.wait_for(backend.close(), 10)
    assert await conn.fetchrow("SELECT status, attempts, worker_id FROM pgqd_jobs WHERE id = $1", job_id) == (
        "queued",
        0,
        None,
    )
