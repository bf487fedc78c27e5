"""What every system's runner shares: JSON in and out, the producer loops, and the handlers' time stamps.

A runner is a small script that drives one queue system through its own public API. compare.py starts it as
a subprocess with that system's Python (``python -m benchmarks.runners.X_runner '{"op": ...}'``) and reads one
JSON document from its stdout. The peers' runners run in the peers' own virtualenvs, so this module uses the
standard library only.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

# What every batched job carries, in each system's own form: its arguments as JSON (procrastinate's kwargs). Jobs
# nearly always carry something, and a path for jobs without payloads would not measure the one users take.
BATCH_ARGUMENTS: dict[str, Any] = {"to": "ada@example.com"}
BATCH_PAYLOAD = json.dumps(BATCH_ARGUMENTS).encode()

# The handlers of the latency scenario append "sequence wall-clock-time" lines to the file this names.
STAMPS_ENV = "BENCH_STAMPS"
DSN_ENV = "BENCH_DSN"


class Producer(Protocol):
    """One system's producer on one connection: a batch of jobs of one entrypoint (each carrying
    ``BATCH_ARGUMENTS``), or one job carrying a sequence number."""

    async def batch(self, count: int, entrypoint: str = "noop") -> None: ...

    async def one(self, entrypoint: str, sequence: int) -> None: ...


def stamp(sequence: object) -> None:
    """Called first thing by a latency handler: records when the handler started, on this machine's clock."""
    at = time.time()
    with open(os.environ[STAMPS_ENV], "a", encoding="ascii") as out:
        out.write(f"{int(str(sequence))} {at:.6f}\n")


async def enqueue_rates(producer: Producer, jobs: int, batch: int, single: int) -> dict[str, float]:
    # Warms the connection and the statement cache, as an app's would be: a single job, and one batch, since a
    # system may send batches with a statement of their own (pgqd does), whose first use prepares it.
    await producer.one("noop", -1)
    await producer.batch(batch)
    began = time.perf_counter()
    for _ in range(jobs // batch):
        await producer.batch(batch)
    batched = (jobs // batch) * batch / (time.perf_counter() - began)
    began = time.perf_counter()
    for sequence in range(single):
        await producer.one("noop", sequence)
    return {"batched_per_s": batched, "single_per_s": single / (time.perf_counter() - began)}


async def fill(producer: Producer, jobs: int, batch: int) -> dict[str, float]:
    for start in range(0, jobs, batch):
        await producer.batch(min(batch, jobs - start))
    return {}


async def fill_mix(producer: Producer, counts: dict[str, int], batch: int) -> dict[str, float]:
    """Each entrypoint's count of jobs, in batches taken from the entrypoints in turn, so that their jobs are
    interleaved in the queue as an application's would be."""
    left = {name: count for name, count in counts.items() if count > 0}
    while left:
        for name in list(left):
            size = min(batch, left[name])
            await producer.batch(size, name)
            left[name] -= size
            if not left[name]:
                del left[name]
    return {}


async def flood(producer: Producer, seconds: float, batch: int) -> dict[str, float]:
    """Enqueues as fast as one connection can for ``seconds``; the window is reported in wall-clock time."""
    started = time.time()
    deadline = time.monotonic() + seconds
    sent = 0
    while time.monotonic() < deadline:
        await producer.batch(batch)
        sent += batch
    return {"started": started, "ended": time.time(), "sent": sent}


async def trickle(producer: Producer, jobs: int, spacing: float) -> dict[str, Any]:
    """One job at a time, ``spacing`` apart, each carrying its sequence number; returns when each was sent."""
    sent: dict[str, float] = {}
    for sequence in range(jobs):
        sent[str(sequence)] = time.time()
        await producer.one("stamp", sequence)
        await asyncio.sleep(spacing)
    return {"sent": sent}


async def one(producer: Producer, entrypoint: str, sequence: int) -> dict[str, Any]:
    await producer.one(entrypoint, sequence)
    return {}


OPERATIONS: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {
    "enqueue": enqueue_rates,
    "fill": fill,
    "fill_mix": fill_mix,
    "one": one,
    "flood": flood,
    "trickle": trickle,
}


def run(open_producer: Callable[[str], AbstractAsyncContextManager[Producer]]) -> None:
    """The runner's main: ``argv[1]`` is ``{"op": ..., "dsn": ..., **arguments}``; prints the result as JSON."""
    request = json.loads(sys.argv[1])
    operation = OPERATIONS[request.pop("op")]
    dsn = request.pop("dsn")

    async def main() -> dict[str, Any]:
        async with open_producer(dsn) as producer:
            return await operation(producer, **request)

    print(json.dumps(asyncio.run(main())))
