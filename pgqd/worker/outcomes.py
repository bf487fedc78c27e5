"""Buffering job outcomes and writing them in one statement per flush, off the dispatch path."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

from pgqd.backend.base import Backend
from pgqd.backoff import Backoff
from pgqd.errors import BackendUnavailable
from pgqd.models import Outcome


class OutcomeRecorder:
    """Collects outcomes and flushes them when ``max_batch`` are waiting or ``linger`` seconds after the first.

    A failed flush keeps its outcomes and is retried with backoff, so a database restart loses none of them.
    """

    def __init__(
        self,
        backend: Backend,
        worker_id: Callable[[], int],
        slot_entrypoints: Sequence[str],
        *,
        max_batch: int,
        linger: float,
        keep_payload: Sequence[str] = (),
        on_unavailable: Callable[[BackendUnavailable], None] | None = None,
        after_flush: Callable[[], None] | None = None,
        on_written: Callable[[Sequence[Outcome]], None] | None = None,
    ) -> None:
        self._backend = backend
        self._worker_id = worker_id
        self._slot_entrypoints = list(slot_entrypoints)
        self._keep_payload = list(keep_payload)
        self._max_batch = max_batch
        self._linger = linger
        self._on_unavailable = on_unavailable
        self._after_flush = after_flush
        # Told of each batch as soon as it is written: under a steady flow a flush goes on writing batches, and
        # its end (after_flush) may come much later.
        self._on_written = on_written
        self._pending: list[Outcome] = []
        self._flushing: list[Outcome] = []
        self._has_pending = asyncio.Event()
        self._full = asyncio.Event()
        self._lock = asyncio.Lock()
        self.recorded = 0

    def add(self, outcome: Outcome) -> None:
        self._pending.append(outcome)
        self._has_pending.set()
        if len(self._pending) >= self._max_batch:
            self._full.set()

    def flush_soon(self) -> None:
        """Ends the linger now, for a worker with nothing else to share the flush with."""
        if self._pending:
            self._full.set()

    @property
    def unwritten(self) -> int:
        return len(self._pending) + len(self._flushing)

    def unwritten_ids(self) -> set[int]:
        return {o.job_id for o in self._pending} | {o.job_id for o in self._flushing}

    async def run(self) -> None:
        """Flushes for as long as the worker runs; cancel it, then call ``close`` for the last flush."""
        backoff = Backoff()
        while True:
            await self._has_pending.wait()
            if len(self._pending) < self._max_batch:
                # asyncio.timeout rather than wait_for: on Python 3.11, wait_for swallows a cancellation that
                # arrives as the event is set (flush_soon while the worker stops), and this task never ends.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._linger):
                        await self._full.wait()
            try:
                await self.flush()
            except BackendUnavailable as exc:
                if self._on_unavailable is not None:
                    self._on_unavailable(exc)
                await asyncio.sleep(backoff.next())
            else:
                backoff.reset()

    async def flush(self) -> None:
        """Writes everything buffered now; on failure the outcomes stay buffered and the error propagates."""
        async with self._lock:
            while self._pending:
                self._flushing, self._pending = (
                    self._pending[: self._max_batch],
                    self._pending[self._max_batch :],
                )
                if not self._pending:
                    self._has_pending.clear()
                    self._full.clear()
                try:
                    self.recorded += await self._backend.record(
                        self._worker_id(), self._flushing, self._slot_entrypoints, self._keep_payload
                    )
                except BaseException:
                    self._pending[:0] = self._flushing
                    self._has_pending.set()
                    raise
                else:
                    if self._on_written is not None:
                        self._on_written(self._flushing)
                finally:
                    self._flushing = []
            if self._after_flush is not None:
                self._after_flush()

    async def close(self, timeout: float) -> bool:
        """The last flush before the worker exits, retried until ``timeout``; False if outcomes were left."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        backoff = Backoff()
        while self._pending:
            try:
                await self.flush()
            except BackendUnavailable:
                pause = min(backoff.next(), deadline - loop.time())
                if pause <= 0:
                    return False
                await asyncio.sleep(pause)
        return True
