"""One real worker process for the process-level tests.

    python -m tests.support.engine_subprocess DSN SPEC

SPEC is JSON::

    {"entrypoints": [{"name": "work", "handler": "timed_sleep", "concurrency_limit": 2, "rate_limit": [20, 1.0]}],
     "settings": {"concurrency": 4, "poll_interval": 0.5},
     "pool_size": 4}

``handler`` names a function of ``tests.support.handlers``; ``settings`` are ``pgqd.WorkerSettings`` fields.
The worker runs on a ``PostgresBackend`` (application_name ``pgqd``) until SIGTERM or SIGINT, which drain it;
a second signal stops it at once. Handlers get a separate pool (application_name ``pgqd-test``) as
``ctx.resources`` to record their runs, so that killing pgqd's connections leaves the recording alone.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Any

import asyncpg

from pgqd import Entrypoint, PostgresBackend, Rate, Worker, WorkerSettings
from pgqd.daemon.logs import configure_logging
from tests.support.handlers import HANDLERS


def build_entrypoint(spec: dict[str, Any]) -> Entrypoint:
    rate = spec.get("rate_limit")
    return Entrypoint(
        spec["name"],
        HANDLERS[spec["handler"]],
        concurrency_limit=int(spec.get("concurrency_limit", 0)),
        rate_limit=Rate(*rate) if rate else None,
        timeout=spec.get("timeout"),
    )


async def serve(dsn: str, spec: dict[str, Any]) -> None:
    settings = WorkerSettings(**spec.get("settings", {}))
    entrypoints = [build_entrypoint(entry) for entry in spec["entrypoints"]]
    backend = await PostgresBackend.open(dsn, pool_size=int(spec.get("pool_size", 4)))
    # Open up front, so that a job's recorded start is not delayed by a connection being made.
    recorder = await asyncpg.create_pool(
        dsn,
        min_size=settings.concurrency,
        max_size=settings.concurrency,
        server_settings={"application_name": "pgqd-test"},
    )
    try:
        worker = Worker(backend, entrypoints, settings, resources=recorder)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, worker.stop)
        await worker.run()
    finally:
        await recorder.close()
        await backend.close()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m tests.support.engine_subprocess DSN SPEC", file=sys.stderr)
        return 2
    configure_logging("warning", "json")
    asyncio.run(serve(argv[0], json.loads(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
