"""The life of one forked worker process: an event loop, a database pool, the resources, the engine.

It checks in with the supervisor over a pipe (``beat <worker id> <jobs started> <retiring>``) from its event
loop, so a
loop blocked by a handler stops the beats and the supervisor replaces the process. SIGTERM drains; a second
SIGTERM stops at once. SIGINT is left to the supervisor, which forwards what it decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from pgqd.backend.bounded import DatabaseTimeouts
from pgqd.backend.postgres import PostgresBackend
from pgqd.backoff import Backoff
from pgqd.daemon.logs import end_noise_episodes
from pgqd.daemon.metrics import WorkerMetrics, use_multiprocess_directory
from pgqd.daemon.scheduler import Scheduler
from pgqd.entrypoint import Entrypoint
from pgqd.errors import BackendUnavailable
from pgqd.identifiers import Names
from pgqd.imports import import_object
from pgqd.models import ScheduleSpec
from pgqd.worker.engine import Worker, WorkerSettings

log = structlog.get_logger("pgqd.worker")


@dataclass(frozen=True)
class WorkerPlan:
    """Everything a worker process needs, prepared by the supervisor before it forks."""

    dsn: str | None
    names: Names
    pool_size: int
    entrypoints: Sequence[Entrypoint]
    settings: WorkerSettings
    resources: str | None
    checkin_fd: int
    beat_every: float
    # The schedules this process fires: all of them in one worker per daemon, none in the others.
    schedules: Sequence[ScheduleSpec] = ()
    # Where this process records its Prometheus samples for the supervisor to serve (None: not recorded).
    metrics_dir: str | None = None
    # The time bound of every database call (from [database] command_timeout and connect_timeout).
    timeouts: DatabaseTimeouts = field(default_factory=DatabaseTimeouts)


def worker_main(plan: WorkerPlan) -> int:
    """Runs in the forked child; returns its exit status."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in ("SIGHUP", "SIGTTIN", "SIGTTOU", "SIGCHLD", "SIGTERM"):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    structlog.contextvars.bind_contextvars(pid=os.getpid())
    try:
        import uvloop

        runner: Callable[[Any], Any] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency; stay usable without it
        runner = asyncio.run
    try:
        return int(runner(_serve(plan)))
    except Exception:
        log.exception("worker process failed")
        return 1


class _Stop:
    """SIGTERM before the engine exists (database still down) ends the process; afterwards it drains."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.worker: Worker | None = None

    def __call__(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        self.requested.set()


async def _serve(plan: WorkerPlan) -> int:
    loop = asyncio.get_running_loop()
    stop = _Stop()
    loop.add_signal_handler(signal.SIGTERM, stop)
    backend = await _open_backend(plan, stop)
    if backend is None:
        return 0
    try:
        metrics = None
        if plan.metrics_dir:
            use_multiprocess_directory(plan.metrics_dir)
            metrics = WorkerMetrics()
        async with _resources(plan.resources) as resources:
            worker = Worker(backend, plan.entrypoints, plan.settings, resources=resources, metrics=metrics)
            stop.worker = worker
            if stop.requested.is_set():
                return 0
            duties = [
                loop.create_task(_check_in(plan, worker)),
                loop.create_task(Scheduler(backend, plan.schedules, metrics).run()),
            ]
            try:
                await worker.run()
            finally:
                for duty in duties:
                    duty.cancel()
                await asyncio.gather(*duties, return_exceptions=True)
    finally:
        await backend.close()
    return 0


async def _open_backend(plan: WorkerPlan, stop: _Stop) -> PostgresBackend | None:
    backoff = Backoff(maximum=10.0)
    while not stop.requested.is_set():
        try:
            return await PostgresBackend.open(
                plan.dsn, plan.names, pool_size=plan.pool_size, timeouts=plan.timeouts, on_recovered=end_noise_episodes
            )
        except BackendUnavailable as exc:
            log.warning("database unavailable, retrying", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.requested.wait(), backoff.next())
    return None


@contextlib.asynccontextmanager
async def _resources(factory_path: str | None) -> AsyncIterator[Any]:
    if factory_path is None:
        yield None
        return
    factory = import_object(factory_path)
    async with factory() as resources:
        yield resources


async def _check_in(plan: WorkerPlan, worker: Worker) -> None:
    # Report the database id as soon as it exists, so a crash right after the first claim is rescued at once.
    await worker.registered.wait()
    while True:
        retiring = int(worker.retiring.is_set())
        try:
            os.write(plan.checkin_fd, f"beat {worker.worker_id} {worker.jobs_started} {retiring}\n".encode())
        except BlockingIOError:
            pass
        except OSError:
            # The supervisor is gone: drain and exit rather than run unsupervised.
            worker.stop()
            return
        if retiring:
            await asyncio.sleep(plan.beat_every)
        else:
            # Tell the supervisor at once when the job budget is spent, so the replacement starts without delay.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(worker.retiring.wait(), plan.beat_every)
