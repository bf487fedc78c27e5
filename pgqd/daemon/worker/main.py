"""The life of one forked worker process: an event loop, a database pool, the resources, the engine.

It checks in with the supervisor over a pipe (``check_in.py``) from its event loop, from the moment it starts:
a loop blocked by a handler stops the check-ins and the supervisor replaces the process. The check-ins also carry
what the supervisor cannot learn otherwise without talking to the database: the jobs in flight, and when this
worker last completed a round trip to the database. SIGTERM drains; a second SIGTERM stops at once. SIGINT is
left to the supervisor, which forwards what it decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import structlog

from pgqd.backend.bounded import DatabaseHealth
from pgqd.backend.postgres import PostgresBackend
from pgqd.backoff import Backoff
from pgqd.daemon.check_in import CheckIn
from pgqd.daemon.logs import end_noise_episodes
from pgqd.daemon.metrics import WorkerMetrics, use_multiprocess_directory
from pgqd.daemon.worker.duties import first_turn_after, keep_doing, lead_duties
from pgqd.daemon.worker.plan import WorkerPlan
from pgqd.errors import BackendUnavailable
from pgqd.imports import import_object
from pgqd.worker.engine import Worker
from pgqd.worker.telemetry import NO_METRICS

log = structlog.get_logger("pgqd.worker")

# Allocations between two collections of the youngest generation (Python's default: 700).
GC_YOUNG_THRESHOLD = 10_000


def worker_main(plan: WorkerPlan) -> int:
    """Runs in the forked child; returns its exit status."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in ("SIGHUP", "SIGTTIN", "SIGTTOU", "SIGCHLD", "SIGTERM"):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    structlog.contextvars.bind_contextvars(pid=os.getpid())
    if plan.django_settings is not None:
        from pgqd.contrib.django.worker import setup_django

        try:
            setup_django(plan.django_settings)
        except Exception:
            log.exception("Django could not be set up", settings=plan.django_settings)
            return 1
    _tune_garbage_collector()
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


def _tune_garbage_collector() -> None:
    # What the supervisor imported and built before the fork lives as long as this process: frozen, it is no
    # longer walked by every collection (and its pages stay shared with the supervisor). The dispatch loop
    # allocates a handful of short-lived objects per job, which set off a young-generation collection every
    # ~100 jobs at the default threshold of 700: 7 % of a worker's time at batch 100 (docs/performance.md).
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


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
    check_ins = _CheckIns(plan, stop)
    checking_in = loop.create_task(check_ins.run())
    try:
        return await _serve_checked_in(plan, stop, check_ins)
    finally:
        checking_in.cancel()
        await asyncio.gather(checking_in, return_exceptions=True)


async def _serve_checked_in(plan: WorkerPlan, stop: _Stop, check_ins: _CheckIns) -> int:
    loop = asyncio.get_running_loop()
    opened = await _open_backend(plan, stop)
    if opened is None:
        return 0
    check_ins.health = opened.health
    backend = opened
    try:
        metrics = None
        if plan.metrics_dir:
            use_multiprocess_directory(plan.metrics_dir)
            metrics = WorkerMetrics()
        async with _resources(plan.resources) as resources:
            worker = Worker(
                backend, plan.entrypoints, plan.settings, resources=resources, metrics=metrics or NO_METRICS
            )
            stop.worker = worker
            check_ins.attach(worker)
            if stop.requested.is_set():
                return 0
            duties = [
                loop.create_task(keep_doing(duty, first_turn_after(duty)))
                for duty in lead_duties(plan, backend, metrics)
            ]
            try:
                await worker.run()
            finally:
                for duty in duties:
                    duty.cancel()
                await asyncio.gather(*duties, return_exceptions=True)
    finally:
        await opened.close()
    return 0


async def _open_backend(plan: WorkerPlan, stop: _Stop) -> PostgresBackend | None:
    backoff = Backoff(maximum=10.0)
    while not stop.requested.is_set():
        try:
            return await PostgresBackend.open(
                plan.dsn,
                plan.names,
                pool_size=plan.pool_size,
                timeouts=plan.timeouts,
                on_recovered=end_noise_episodes,
                warm=True,
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


class _CheckIns:
    """Checks in with the supervisor every ``check_in_every`` seconds from the start, and at once when the worker
    registers (so a crash right after its first claim is rescued at once) or spends its job budget (so its
    replacement starts without delay)."""

    def __init__(self, plan: WorkerPlan, stop: _Stop) -> None:
        self.fd = plan.check_in_fd
        self.every = plan.check_in_every
        self.stop = stop
        self.worker: Worker | None = None
        # The backend's view of the database: when a call last came back from it.
        self.health: DatabaseHealth | None = None
        self._attached = asyncio.Event()

    def attach(self, worker: Worker) -> None:
        self.worker = worker
        self._attached.set()

    async def run(self) -> None:
        while True:
            try:
                os.write(self.fd, self.now().encode())
            except BlockingIOError:
                pass
            except OSError:
                # The supervisor is gone: drain and exit rather than run unsupervised.
                self.stop()
                return
            await self._until_next()

    def now(self) -> CheckIn:
        """The check-in as of now."""
        worker, health = self.worker, self.health
        age = time.monotonic() - health.last_ok if health is not None else None
        if worker is None:
            return CheckIn(0, 0, False, 0, age)
        return CheckIn(worker.worker_id, worker.jobs_started, worker.retiring.is_set(), len(worker.running), age)

    async def _until_next(self) -> None:
        worker = self.worker
        events = [self._attached] if worker is None else [worker.registered, worker.retiring]
        waits = [asyncio.ensure_future(event.wait()) for event in events if not event.is_set()]
        if not waits:
            await asyncio.sleep(self.every)
            return
        _, pending = await asyncio.wait(waits, timeout=self.every, return_when=asyncio.FIRST_COMPLETED)
        for wait in pending:
            wait.cancel()
