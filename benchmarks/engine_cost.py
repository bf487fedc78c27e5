"""What the worker engine itself costs per job, without a database: a ``Worker`` draining the in-memory backend.

    .venv/bin/python -m benchmarks.engine_cost [--batch 100] [--jobs 50000]     # CPU µs per job, 5 runs
    .venv/bin/python -m benchmarks.engine_cost --callgrind [--batch 100]        # instructions per job

The engine runs as a worker process runs it (uvloop, metrics recorded, logging at the default level), on no-op
jobs. Wall-clock and CPU figures drift with whatever else the machine does; ``--callgrind`` counts instructions
instead (valgrind's callgrind, from Debian's ``valgrind``), which repeat from run to run: it drains 2,000 and
4,000 jobs under callgrind and divides the difference by 2,000, so start-up and enqueueing drop out. The count
includes the in-memory backend's own work, the same in both runs of an A/B comparison.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import statistics
import subprocess
import sys
import time

import uvloop

from pgqd import Entrypoint, Job, MemoryBackend
from pgqd.daemon.logs import configure_logging
from pgqd.daemon.metrics import WorkerMetrics
from pgqd.models import NewJob
from pgqd.worker.engine import Worker, WorkerSettings

CALLGRIND_JOBS = (2000, 4000)


async def noop(job: Job) -> None:
    """Does nothing, so what is measured is the engine."""


async def drain(jobs: int, batch: int) -> float:
    """Drains ``jobs`` no-op jobs; returns the CPU seconds the drain took."""
    from prometheus_client import CollectorRegistry

    backend = MemoryBackend()
    await backend.enqueue([NewJob("noop", b"{}") for _ in range(jobs)], "raise")
    settings = WorkerSettings(batch_size=batch, concurrency=max(32, 2 * batch))
    worker = Worker(backend, [Entrypoint("noop", noop)], settings, metrics=WorkerMetrics(CollectorRegistry()))
    gc.freeze()  # as worker processes do after start-up
    started = time.process_time()
    await worker.run(drain=True)
    return time.process_time() - started


def instructions(jobs: int, batch: int) -> int:
    """Instructions callgrind counts for one drain of ``jobs`` in a child process."""
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-m",
               "benchmarks.engine_cost", "--once", str(jobs), "--batch", str(batch)]  # fmt: skip
    # A fixed hash seed: set iteration order, and so the work, is the same in every run.
    done = subprocess.run(
        command, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "0"}
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"callgrind printed no instruction count:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--callgrind", action="store_true", help="count instructions per job under callgrind")
    parser.add_argument("--once", type=int, help=argparse.SUPPRESS)  # one drain, for callgrind to count
    args = parser.parse_args()
    configure_logging("info", "json")
    if args.once:
        uvloop.run(drain(args.once, args.batch))
    elif args.callgrind:
        small, large = (instructions(jobs, args.batch) for jobs in CALLGRIND_JOBS)
        per_job = (large - small) / (CALLGRIND_JOBS[1] - CALLGRIND_JOBS[0])
        print(f"batch {args.batch}: {per_job:,.0f} instructions per job")
    else:
        runs = [uvloop.run(drain(args.jobs, args.batch)) / args.jobs * 1e6 for _ in range(args.runs)]
        figures = " ".join(f"{run:.1f}" for run in runs)
        print(f"batch {args.batch}: {statistics.median(runs):.1f} µs of CPU per job (median; runs: {figures})")


if __name__ == "__main__":
    main()
