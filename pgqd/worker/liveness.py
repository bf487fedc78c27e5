"""The heartbeat duty of a worker: it marks the worker alive, hears of cancellations and waiting suspects, and
rescues the jobs of silent workers. (The log's retention is the lead worker's: pgqd/daemon/worker/log_partitions.py.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from pgqd.backend.base import Backend
from pgqd.errors import BackendUnavailable
from pgqd.models import HeartbeatReply, WorkerInfo
from pgqd.worker.settings import WorkerSettings
from pgqd.worker.telemetry import EngineMetrics

log = structlog.get_logger("pgqd.worker")


class Liveness:
    """Writes the heartbeat every ``settings.heartbeat_every`` seconds until cancelled. ``last_heartbeat`` is the
    monotonic time of the last heartbeat written (or of the registration)."""

    def __init__(
        self,
        backend: Backend,
        settings: WorkerSettings,
        info: WorkerInfo,
        worker_id: Callable[[], int],
        metrics: EngineMetrics,
        *,
        on_reply: Callable[[HeartbeatReply], None],
        on_unavailable: Callable[[BackendUnavailable], None],
    ) -> None:
        self._backend = backend
        self._settings = settings
        self._info = info
        self._worker_id = worker_id
        self._metrics = metrics
        self._on_reply = on_reply
        self._on_unavailable = on_unavailable
        self.last_heartbeat = time.monotonic()

    def stale(self) -> bool:
        """True once the last heartbeat written is so old that the fleet may soon presume this worker dead."""
        return time.monotonic() - self.last_heartbeat > self._settings.claims_stop_after

    async def run(self) -> None:
        settings = self._settings
        last_rescue = 0.0
        while True:
            await asyncio.sleep(settings.heartbeat_every)
            now = time.monotonic()
            self._metrics.publish()
            try:
                reply = await self._backend.heartbeat(self._worker_id(), self._info)
                self.last_heartbeat = time.monotonic()
                self._on_reply(reply)
                if now - last_rescue >= settings.worker_timeout / 2:
                    last_rescue = now
                    await self._rescue_stale()
            except BackendUnavailable as exc:
                self._on_unavailable(exc)

    async def _rescue_stale(self) -> None:
        rescued = await self._backend.rescue_stale(self._settings.worker_timeout)
        self._metrics.jobs_rescued("stale_worker", len(rescued))
        if rescued:
            log.warning("took back the jobs of silent workers", count=len(rescued), job_ids=rescued[:20])
