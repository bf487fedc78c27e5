"""What every benchmark shares: a fresh database, the machine description, and printing results."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import sys
import uuid
from collections.abc import AsyncIterator, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from pgqd import install
from pgqd.daemon.logs import configure_logging

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def parser(description: str) -> argparse.ArgumentParser:
    configure_logging("warning", "json")
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--server", default=os.environ.get("PGQD_BENCH_DSN", DEFAULT_SERVER), help="maintenance DSN")
    p.add_argument("--runs", type=int, default=3, help="repetitions; the median is reported (default 3)")
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    return p


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


@contextlib.asynccontextmanager
async def empty_database(server: str) -> AsyncIterator[str]:
    """A new, empty database on ``server``, dropped afterwards; yields its DSN."""
    name = f"pgqd_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield with_database(server, name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@contextlib.asynccontextmanager
async def fresh_database(server: str) -> AsyncIterator[str]:
    """A new database with pgqd installed, dropped afterwards."""
    async with empty_database(server) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            await install(conn)
        finally:
            await conn.close()
        yield dsn


def concurrency_for(batch: int) -> int:
    """Jobs in flight per process for a batch size: pgqd's default (32), or twice the batch when that is more,
    so that a process can claim its next batch while the last one runs (PgQueuer requires at least that)."""
    return max(32, 2 * batch)


async def environment(server: str) -> dict[str, Any]:
    conn = await asyncpg.connect(server)
    try:
        settings = {
            name: await conn.fetchval(f"SELECT current_setting('{name}')")
            for name in ("server_version", "fsync", "synchronous_commit", "shared_buffers", "max_connections")
        }
    finally:
        await conn.close()
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "postgres": settings,
    }


T = TypeVar("T")


def run_until_signalled(main: Coroutine[Any, Any, T]) -> T:
    """Runs ``main`` and returns what it returns; SIGTERM or SIGINT cancel it, so that its context managers stop
    the daemons and private clusters it started rather than leave them running when the script is killed."""

    async def cancelled_by_signals() -> T:
        task = asyncio.ensure_future(main)
        loop = asyncio.get_running_loop()
        signalled: list[int] = []

        def stop(signum: int) -> None:
            signalled.append(signum)
            task.cancel()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop, signum)
        try:
            return await task
        except asyncio.CancelledError:
            # Without a signal, this is asyncio.run cancelling what is left after ``main`` exited on its own
            # (argparse's --help or a usage error): that exit, not this one, is the script's.
            if not signalled:
                raise
            sys.exit(f"stopped by a signal; {Path(sys.argv[0]).stem} cleaned up what it started")

    return asyncio.run(cancelled_by_signals())


def median_of(runs: Sequence[float]) -> float:
    return round(statistics.median(runs), 1)


def report(name: str, results: list[dict[str, Any]], env: dict[str, Any], only_json: bool) -> None:
    # As typed from the repository's root, without this machine's paths.
    command = " ".join([f"python -m benchmarks.{Path(sys.argv[0]).stem}", *sys.argv[1:]])
    document = {"benchmark": name, "environment": env, "results": results, "command": command}
    if not only_json:
        keys = list(results[0]) if results else []
        widths = [max(len(k), *(len(str(r[k])) for r in results)) for k in keys]
        print("  ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True)))
        for row in results:
            print("  ".join(str(row[k]).ljust(w) for k, w in zip(keys, widths, strict=True)))
        print()
    print(json.dumps(document, indent=None if only_json else 2, default=str))
