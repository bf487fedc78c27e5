"""Buffering job outcomes and writing them in one statement per flush, off the dispatch path."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence

from pgqd.backend.base import Backend
from pgqd.backoff import Backoff
from pgqd.errors import BackendUnavailable
from pgqd.models import HandOver, Outcome, Recorded


class OutcomeRecorder:
    """Collects outcomes and flushes them when ``max_batch`` are waiting or ``linger`` seconds after the first.

    A failed flush keeps its outcomes and is retried with backoff, so a database restart loses none of them.
    ``hand_over`` says, per batch, which slots its write passes on to the next jobs of their entrypoints
    (``HandOver``); ``on_written`` is told of each batch written, with the jobs claimed in those slots.
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
        on_written: Callable[[Sequence[Outcome], Recorded], None] | None = None,
        hand_over: Callable[[Sequence[Outcome]], HandOver | None] | None = None,
        on_hand_over_unknown: Callable[[], None] | None = None,
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
        self._hand_over = hand_over
        # A write that handed slots over and failed may have committed: jobs claimed for the worker in those
        # slots would be marked as its own without its knowing them.
        self._on_hand_over_unknown = on_hand_over_unknown
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
                hand_over = self._hand_over(self._flushing) if self._hand_over is not None else None
                try:
                    written = await self._backend.record(
                        self._worker_id(), self._flushing, self._slot_entrypoints, self._keep_payload, hand_over
                    )
                except BaseException:
                    self._pending[:0] = self._flushing
                    self._has_pending.set()
                    if hand_over is not None and self._on_hand_over_unknown is not None:
                        self._on_hand_over_unknown()
                    raise
                else:
                    self.recorded += written.applied
                    if self._on_written is not None:
                        self._on_written(self._flushing, written)
                finally:
                    self._flushing = []
            if self._after_flush is not None:
                self._after_flush()

    @contextlib.asynccontextmanager
    async def between_flushes(self) -> AsyncIterator[None]:
        """Holds off flushes: what a flush hands over is running by the time one ends, so a look at the jobs
        the worker runs taken in here misses none that the database says it holds."""
        async with self._lock:
            yield

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
