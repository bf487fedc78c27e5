"""Letting time pass in a behavioural test: at once on the in-memory backend, for real on PostgreSQL."""

from __future__ import annotations

import asyncio

from pgqd import ManualClock, MemoryBackend
from pgqd.backend.base import Backend


class TimePasses:
    """``await time_passes(seconds)``: on the in-memory backend its clock skips ahead at once; on PostgreSQL,
    whose clock cannot be moved, the test sleeps."""

    def __init__(self, backend: Backend) -> None:
        clock = backend.clock if isinstance(backend, MemoryBackend) else None
        self.clock = clock if isinstance(clock, ManualClock) else None

    async def __call__(self, seconds: float) -> None:
        if self.clock is None:
            await asyncio.sleep(seconds)
        else:
            self.clock.advance(seconds)
            await asyncio.sleep(0)
