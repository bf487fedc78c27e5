"""The workers' connection pool (pgqd/backend/connection_pool.py) on real connections: it never lends more than its
size, serves waiters in order, replaces what it lost, and never lends a connection it knows to be unusable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from pgqd.backend.bounded import BoundedPool, DatabaseHealth, DatabaseTimeouts
from pgqd.backend.connection_pool import ConnectionPool, PoolClosed
from pgqd.errors import BackendUnavailable
from tests.support.waiting import wait_until

APPLICATION = "pgqd-pool-test"


@pytest.fixture
async def opened(db_dsn: str) -> AsyncIterator[tuple[ConnectionPool, list[Any]]]:
    """A pool of two, and every connection it ever opened."""
    made: list[Any] = []

    async def connect() -> Any:
        conn = await asyncpg.connect(db_dsn, server_settings={"application_name": APPLICATION})
        made.append(conn)
        return conn

    pool = ConnectionPool(connect, 2)
    await asyncio.wait_for(pool.fill(), 10)
    try:
        yield pool, made
    finally:
        await asyncio.wait_for(pool.close(), 10)


async def test_it_lends_at_most_its_size_and_the_next_caller_waits_for_a_connection_given_back(
    opened: tuple[ConnectionPool, list[Any]],
) -> None:
    pool, made = opened
    first, second = await pool.acquire(), await pool.acquire()
    assert first is not second
    assert len(made) == 2
    third = asyncio.ensure_future(pool.acquire())
    await asyncio.sleep(0.05)
    assert not third.done()
    pool.release(second)
    assert await asyncio.wait_for(third, 5) is second
    assert len(made) == 2  # no connection opened beyond the size
    pool.release(first)
    pool.release(second)


async def test_waiters_are_served_in_the_order_they_came(opened: tuple[ConnectionPool, list[Any]]) -> None:
    pool, _ = opened
    held = [await pool.acquire(), await pool.acquire()]
    served: list[int] = []

    async def wait(number: int) -> None:
        conn = await pool.acquire()
        served.append(number)
        await asyncio.sleep(0)
        pool.release(conn)

    waiting = [asyncio.ensure_future(wait(number)) for number in range(4)]
    await asyncio.sleep(0.05)
    for conn in held:
        pool.release(conn)
    await asyncio.wait_for(asyncio.gather(*waiting), 5)
    assert served == [0, 1, 2, 3]


async def test_a_wait_cut_short_takes_nothing_and_the_next_caller_gets_the_connection(
    opened: tuple[ConnectionPool, list[Any]],
) -> None:
    pool, _ = opened
    held = [await pool.acquire(), await pool.acquire()]
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await pool.acquire()
    pool.release(held[0])
    assert await asyncio.wait_for(pool.acquire(), 5) is held[0]
    for conn in held:
        pool.release(conn)


async def test_a_connection_given_back_closed_is_replaced_by_a_new_one(
    opened: tuple[ConnectionPool, list[Any]],
) -> None:
    pool, made = opened
    held = [await pool.acquire(), await pool.acquire()]
    waiter = asyncio.ensure_future(pool.acquire())
    await asyncio.sleep(0.05)
    held[0].terminate()
    pool.release(held[0])
    replacement = await asyncio.wait_for(waiter, 5)
    assert replacement not in held
    assert len(made) == 3
    assert await replacement.fetchval("SELECT 1") == 1
    pool.release(replacement)
    pool.release(held[1])


async def test_a_connection_given_back_inside_a_transaction_is_closed_not_lent_again(
    opened: tuple[ConnectionPool, list[Any]], conn: Any
) -> None:
    pool, _ = opened
    left = await pool.acquire()
    await left.execute("BEGIN")
    await left.execute("CREATE TEMPORARY TABLE half_done (x int)")
    pool.release(left)
    assert left.is_closed()
    lent = [await pool.acquire(), await pool.acquire()]
    assert left not in lent
    for each in lent:
        assert not each.is_in_transaction()
        pool.release(each)


async def test_a_connection_whose_server_process_ended_while_idle_is_not_lent(
    opened: tuple[ConnectionPool, list[Any]], conn: Any
) -> None:
    pool, made = opened
    ended = await conn.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1", APPLICATION
    )
    assert ended == 2

    async def all_closed() -> bool:
        return all(c.is_closed() for c in made)

    await wait_until(all_closed, timeout=5, what="the pool's connections to see their server processes end")
    lent = await asyncio.wait_for(pool.acquire(), 5)
    assert lent not in made[:2]
    assert await lent.fetchval("SELECT 1") == 1
    pool.release(lent)


async def test_close_waits_for_lent_connections_and_then_refuses_callers(
    opened: tuple[ConnectionPool, list[Any]],
) -> None:
    pool, made = opened
    lent = await pool.acquire()
    held = await pool.acquire()
    waiter = asyncio.ensure_future(pool.acquire())
    await asyncio.sleep(0.05)
    closing = asyncio.ensure_future(pool.close())
    await asyncio.sleep(0.05)
    assert not closing.done()
    with pytest.raises(PoolClosed):
        await asyncio.wait_for(waiter, 5)
    pool.release(lent)
    pool.release(held)
    await asyncio.wait_for(closing, 5)
    assert all(c.is_closed() for c in made)
    with pytest.raises(PoolClosed):
        await pool.acquire()


async def test_a_bounded_wait_for_a_connection_fails_as_unavailable_in_time(db_dsn: str) -> None:
    timeouts = DatabaseTimeouts(command=0.3, connect=0.2)
    bounded = await BoundedPool.open(db_dsn, 1, timeouts, DatabaseHealth())
    try:
        async with bounded.acquire():
            started = asyncio.get_running_loop().time()
            with pytest.raises(BackendUnavailable, match="waiting for a connection"):
                await bounded.fetchval("SELECT 1")
            assert asyncio.get_running_loop().time() - started < 2.0
        assert await asyncio.wait_for(bounded.fetchval("SELECT 2"), 5) == 2
    finally:
        await asyncio.wait_for(bounded.close(), 5)


async def test_a_caller_waiting_for_a_connection_opens_one_when_another_callers_open_fails(db_dsn: str) -> None:
    failures = [OSError("refused")]

    async def connect() -> Any:
        if failures:
            await asyncio.sleep(0.05)
            raise failures.pop()
        return await asyncpg.connect(db_dsn)

    pool = ConnectionPool(connect, 1)
    try:
        opening = asyncio.ensure_future(pool.acquire())  # opens the pool's only connection, and fails
        await asyncio.sleep(0.01)
        waiting = asyncio.ensure_future(pool.acquire())  # the place is taken: it waits
        with pytest.raises(OSError, match="refused"):
            await asyncio.wait_for(opening, 5)
        conn = await asyncio.wait_for(waiting, 5)  # not left waiting for a release that never comes
        assert await conn.fetchval("SELECT 1") == 1
        pool.release(conn)
    finally:
        await asyncio.wait_for(pool.close(), 10)
