"""The fault-injecting proxy the failover and frozen-database tests rely on does what it says."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.support.tcp_proxy import TcpProxy


async def test_freeze_hangs_open_connections_and_thaw_resumes_them(db_dsn: str) -> None:
    with TcpProxy.for_dsn(db_dsn) as proxy:
        conn = await asyncpg.connect(proxy.route(db_dsn))
        try:
            assert await conn.fetchval("SELECT 1") == 1
            proxy.freeze()
            pending = asyncio.ensure_future(conn.fetchval("SELECT 2"))
            done, _ = await asyncio.wait([pending], timeout=0.5)
            assert not done
            proxy.thaw()
            assert await asyncio.wait_for(pending, timeout=5) == 2
        finally:
            conn.terminate()


async def test_blackhole_cuts_open_connections_but_lets_new_ones_through(db_dsn: str) -> None:
    with TcpProxy.for_dsn(db_dsn) as proxy:
        old = await asyncpg.connect(proxy.route(db_dsn))
        try:
            assert proxy.blackhole_open() == 1
            with pytest.raises(TimeoutError):
                await old.fetchval("SELECT 1", timeout=0.5)
            new = await asyncpg.connect(proxy.route(db_dsn), timeout=5)
            assert await new.fetchval("SELECT 3") == 3
            await new.close()
        finally:
            old.terminate()
