"""Clocks for the in-memory backend: the wall clock, or a manual one that tests move forward themselves."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]


class ManualClock:
    """Seconds since the epoch that stand still until ``advance`` moves them, for tests that must not sleep.

    ``MemoryBackend(clock=ManualClock())`` then sees deferred jobs come due, retry delays pass, rate-limit tokens
    refill and workers go stale exactly when the test says so. Each ``advance`` also wakes the workers of that
    backend, as the passing of real time would. With ``running=True`` the clock also moves with real time, and
    ``advance`` only skips ahead.
    """

    def __init__(self, start: float | None = None, *, running: bool = False) -> None:
        self._offset = (time.time() if start is None else start) - (time.monotonic() if running else 0.0)
        self._running = running
        self._listeners: list[Callable[[], None]] = []

    def __call__(self) -> float:
        return self._offset + time.monotonic() if self._running else self._offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock only moves forward")
        self._offset += seconds
        for listener in list(self._listeners):
            listener()

    def on_advance(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)
