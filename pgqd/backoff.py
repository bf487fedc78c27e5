"""Exponential backoff with jitter for reconnecting and retrying database calls."""

from __future__ import annotations

import random


class Backoff:
    """Successive waits of ``initial`` doubling up to ``maximum`` seconds, each jittered to 50-100%."""

    def __init__(self, initial: float = 0.05, maximum: float = 5.0) -> None:
        self._initial = initial
        self._maximum = maximum
        self._next = initial

    def next(self) -> float:
        wait = self._next
        self._next = min(self._next * 2, self._maximum)
        return random.uniform(wait / 2, wait)

    def reset(self) -> None:
        self._next = self._initial
