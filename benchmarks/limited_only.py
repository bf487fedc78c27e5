"""A worker that serves only a concurrency-limited entrypoint, while a producer enqueues its jobs one at a time.

    .venv/bin/python -m benchmarks.limited_only [--rate 500] [--seconds 5] [--workers 1] [--runs 3]

Each enqueue is its own transaction and sends a notification. The workers (default settings, in this process,
each with its own connections) serve one entrypoint with ``concurrency_limit = 2`` whose jobs work 5 ms, so they
run at most 400 a second together: at a rate above that, a backlog builds and the limit is full nearly all the
time. Prints the jobs run and the claims sent per second (all workers), medians of ``--runs``: every claim names
the limit, so each one probes its work, locks its limit row and counts its running jobs. The producer shares the
workers' event loop; its enqueues are the same in every run, so compare figures of one run, or of two trees run
alternately.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from benchmarks.common import environment, fresh_database, parser, report, run_until_signalled
from pgqd import Client, Entrypoint, Job, PostgresBackend, Worker
from pgqd.backend.base import Backend
from pgqd.worker.settings import WorkerSettings

WORK_S = 0.005
WARM_UP_S = 0.5


class CountedClaims:
    """The worker's backend, counting its claims."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self.claims = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    async def claim(self, *args: Any, **options: Any) -> Any:
        self.claims += 1
        return await self._backend.claim(*args, **options)


async def one_run(server: str, rate: float, seconds: float, workers: int) -> dict[str, float]:
    async with fresh_database(server) as dsn:
        backends = [await PostgresBackend.open(dsn) for _ in range(workers)]
        producer = await PostgresBackend.open(dsn)
        ran: list[int] = []

        async def work(job: Job) -> None:
            await asyncio.sleep(WORK_S)
            ran.append(job.id)

        counted = [CountedClaims(backend) for backend in backends]
        fleet = [
            Worker(c, [Entrypoint("billing", work, concurrency_limit=2)], WorkerSettings())  # type: ignore[arg-type]
            for c in counted
        ]
        serving = [asyncio.create_task(worker.run()) for worker in fleet]
        try:
            for worker in fleet:
                await asyncio.wait_for(worker.registered.wait(), timeout=30)
            await asyncio.sleep(WARM_UP_S)  # the workers' first polls and heartbeats are behind them
            client = Client(producer)
            claims = sum(c.claims for c in counted)
            started, sent = time.monotonic(), 0
            while (now := time.monotonic()) - started < seconds:
                await client.enqueue("billing")
                sent += 1
                await asyncio.sleep(max(0.0, started + sent / rate - now))
            elapsed = time.monotonic() - started
            return {
                "enqueued_per_s": round(sent / elapsed),
                "ran_per_s": round(len(ran) / elapsed),
                "claims_per_s": round((sum(c.claims for c in counted) - claims) / elapsed),
            }
        finally:
            for worker in fleet:
                worker.stop()
            await asyncio.wait_for(asyncio.gather(*serving), timeout=30)
            for backend in [*backends, producer]:
                await backend.close()


async def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--rate", type=float, default=500.0, help="jobs enqueued per second (500)")
    p.add_argument("--seconds", type=float, default=5.0, help="how long the producer runs (5)")
    p.add_argument("--workers", type=int, default=1, help="workers serving the entrypoint (1)")
    args = p.parse_args()
    runs = [await one_run(args.server, args.rate, args.seconds, args.workers) for _ in range(args.runs)]
    result: dict[str, Any] = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    result["runs"] = runs
    report("a worker serving only a limited entrypoint", [result], await environment(args.server), args.json)


if __name__ == "__main__":
    run_until_signalled(main())
