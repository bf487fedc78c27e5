"""The systems compare.py measures: how to install each, run its consumer, drive its producer, and read its
outcomes back from its own tables.

pgqd runs as the real daemon; PgQueuer as ``pgq run`` and procrastinate as ``procrastinate worker``, one OS
process per worker process, from their own virtualenvs. Each system's producer is a runner script
(benchmarks/runners/) run with that system's Python. Every system serves two handlers: ``noop`` (does nothing)
and ``stamp`` (records when it started, for pickup latency).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg

from benchmarks.daemon import REPO, running_daemon, running_processes
from benchmarks.peer_envs import ensure_peer, installed_version
from benchmarks.runners.mix import ENTRYPOINTS_ENV, Entrypoint, dumps
from benchmarks.runners.protocol import DSN_ENV
from pgqd import install

Mix = tuple[Entrypoint, ...]


@dataclass(frozen=True)
class Tables:
    """Where a system records outcomes: SQL over its own tables, for the no-op jobs only (``finished`` and
    ``span``: for the entrypoints in $1)."""

    where: str  # which columns the rates are read from, in words
    finished: str  # $1: entrypoints -> count of finished jobs
    span: str  # $1: entrypoints -> (finished, first start, last finish)
    completed_between: str  # $1, $2: epoch seconds -> finished in that window
    backlog: str  # -> jobs not finished yet


class System:
    name: str
    label: str
    runner: str
    tables: Tables
    has_rate_limit = True  # whether it can limit the rate of an entrypoint's jobs across its workers

    def python(self) -> str:
        raise NotImplementedError

    def version(self) -> str:
        raise NotImplementedError

    async def install(self, dsn: str) -> None:
        raise NotImplementedError

    def consumer(
        self, dsn: str, processes: int, batch: int, concurrency: int, env: dict[str, str], mix: Mix | None = None
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """Its workers, serving ``noop`` and ``stamp``, or the entrypoints of ``mix`` (benchmarks/runners/mix.py)."""
        raise NotImplementedError

    async def run(self, dsn: str, op: str, **arguments: Any) -> dict[str, Any]:
        """Runs one operation of this system's runner (benchmarks/runners/protocol.py) and returns its JSON."""
        request = json.dumps({"op": op, "dsn": dsn, **arguments})
        process = await asyncio.create_subprocess_exec(
            self.python(), "-m", self.runner, request, cwd=REPO, env=runner_env(dsn),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        out, err = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"{self.runner} {op} failed:\n{err.decode(errors='replace')[-3000:]}")
        result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        return result


def runner_env(dsn: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), DSN_ENV: dsn}


class Pgqd(System):
    name = label = "pgqd"
    runner = "benchmarks.runners.pgqd_runner"
    tables = Tables(
        where="pgqd_log: started_at (handler start) and finished_at (handler end)",
        finished="SELECT count(*) FROM pgqd_log WHERE entrypoint = ANY($1::text[])",
        span="SELECT count(*), min(started_at), max(finished_at) FROM pgqd_log WHERE entrypoint = ANY($1::text[])",
        completed_between="""SELECT count(*) FROM pgqd_log WHERE entrypoint = 'noop'
                             AND finished_at BETWEEN to_timestamp($1) AND to_timestamp($2)""",
        backlog="SELECT count(*) FROM pgqd_jobs",
    )

    def python(self) -> str:
        return sys.executable

    def version(self) -> str:
        from importlib.metadata import version

        return version("pgqd")

    async def install(self, dsn: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await install(conn)
        finally:
            await conn.close()

    def consumer(
        self, dsn: str, processes: int, batch: int, concurrency: int, env: dict[str, str], mix: Mix | None = None
    ) -> contextlib.AbstractAsyncContextManager[None]:
        return running_daemon(dsn, processes, batch, concurrency, env, mix=mix)


class Peer(System):
    package: str
    ready_sql: str  # -> how many consumer processes are up

    def python(self) -> str:
        return str(ensure_peer(self.name) / "python")

    def tool(self, name: str) -> str:
        return str(ensure_peer(self.name) / name)

    def version(self) -> str:
        return installed_version(self.name, self.package)

    def commands(self, batch: int, concurrency: int) -> list[str]:
        raise NotImplementedError

    @contextlib.asynccontextmanager
    async def consumer(
        self, dsn: str, processes: int, batch: int, concurrency: int, env: dict[str, str], mix: Mix | None = None
    ) -> AsyncIterator[None]:
        if mix is not None:
            env = {**env, ENTRYPOINTS_ENV: dumps(mix)}
        conn = await asyncpg.connect(dsn)

        async def ready() -> bool:
            return bool(await conn.fetchval(self.ready_sql) >= processes)

        try:
            command = self.commands(batch, concurrency)
            async with running_processes([command] * processes, {**runner_env(dsn), **env}, ready):
                yield
        finally:
            await conn.close()


class PgQueuer(Peer):
    name = "pgqueuer"
    label = "PgQueuer"
    package = "pgqueuer"
    runner = "benchmarks.runners.pgqueuer_runner"
    has_rate_limit = False  # 1.6's entrypoint() takes a concurrency_limit, and no rate
    tables = Tables(
        where="pgqueuer_log: created of the 'picked' rows (claim) and of the 'successful' rows (outcome written)",
        finished="""SELECT count(*) FROM pgqueuer_log
                    WHERE entrypoint = ANY($1::text[]) AND status = 'successful'""",
        span="""SELECT count(*) FILTER (WHERE status = 'successful'), min(created) FILTER (WHERE status = 'picked'),
                       max(created) FILTER (WHERE status = 'successful')
                FROM pgqueuer_log WHERE entrypoint = ANY($1::text[])""",
        completed_between="""SELECT count(*) FROM pgqueuer_log WHERE entrypoint = 'noop' AND status = 'successful'
                             AND created BETWEEN to_timestamp($1) AND to_timestamp($2)""",
        backlog="SELECT count(*) FROM pgqueuer",
    )
    ready_sql = """SELECT count(*) FROM pg_stat_activity
                   WHERE datname = current_database() AND application_name = 'bench-pgqueuer'"""

    async def install(self, dsn: str) -> None:
        await asyncio.to_thread(
            subprocess.run, [self.tool("pgq"), "install"], env={**os.environ, "PGDSN": dsn},
            check=True, capture_output=True,
        )  # fmt: skip

    def commands(self, batch: int, concurrency: int) -> list[str]:
        # What "pgq run FACTORY --batch-size B --max-concurrent-tasks C" does (see the runner for why not the CLI).
        return [self.python(), "-m", self.runner, "consume", str(batch), str(concurrency)]


class Procrastinate(Peer):
    name = "procrastinate"
    label = "procrastinate"
    package = "procrastinate"
    runner = "benchmarks.runners.procrastinate_runner"
    app = "benchmarks.runners.procrastinate_app.app"
    tables = Tables(
        where="procrastinate_events: at of the 'started' events (fetch) and of the 'succeeded' events (outcome)",
        finished="""SELECT count(*) FROM procrastinate_jobs
                    WHERE task_name = ANY($1::text[]) AND status = 'succeeded'""",
        span="""SELECT count(*) FILTER (WHERE e.type = 'succeeded'), min(e.at) FILTER (WHERE e.type = 'started'),
                       max(e.at) FILTER (WHERE e.type = 'succeeded')
                FROM procrastinate_events e JOIN procrastinate_jobs j ON j.id = e.job_id
                WHERE j.task_name = ANY($1::text[])""",
        completed_between="""SELECT count(*) FROM procrastinate_events e JOIN procrastinate_jobs j ON j.id = e.job_id
                             WHERE j.task_name = 'noop' AND e.type = 'succeeded'
                             AND e.at BETWEEN to_timestamp($1) AND to_timestamp($2)""",
        backlog="SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')",
    )
    ready_sql = "SELECT count(*) FROM procrastinate_workers"

    async def install(self, dsn: str) -> None:
        await asyncio.to_thread(
            subprocess.run, [self.tool("procrastinate"), "--app", self.app, "schema", "--apply"],
            env=runner_env(dsn), cwd=REPO, check=True, capture_output=True,
        )  # fmt: skip

    def consumer(
        self, dsn: str, processes: int, batch: int, concurrency: int, env: dict[str, str], mix: Mix | None = None
    ) -> contextlib.AbstractAsyncContextManager[None]:
        if mix is not None:
            raise ValueError("the procrastinate app of these benchmarks has the tasks noop and stamp only")
        return super().consumer(dsn, processes, batch, concurrency, env)

    def commands(self, batch: int, concurrency: int) -> list[str]:
        # procrastinate fetches one job per query: it has no batch size, only concurrency.
        return [self.tool("procrastinate"), "--app", self.app, "worker", "--concurrency", str(concurrency)]


SYSTEMS: dict[str, System] = {s.name: s for s in (Pgqd(), PgQueuer(), Procrastinate())}
