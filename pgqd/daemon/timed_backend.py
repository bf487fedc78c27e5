"""The worker process's backend, noting when a call last came back from the database.

A worker reports that moment in its check-ins, and the supervisor's /readyz judges the database by it: the
supervisor itself never talks to the database. Every call the engine makes counts (claims, outcome flushes, the
heartbeat every ``worker_timeout / 4`` at most), so an idle worker still proves the database reachable several
times per ``worker_timeout``, at no cost beyond reading the clock.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from typing import Any

from pgqd.backend.base import Backend


class TimedBackend:
    """Stands in for the ``Backend`` it wraps (every attribute is forwarded; mypy sees that through
    ``__getattr__``)."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        # Opening the backend was itself a round trip.
        self.last_success = time.monotonic()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._backend, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute
        timed = self._timed(attribute)
        # Cached on the instance: later lookups find it without coming back here.
        setattr(self, name, timed)
        return timed

    def _timed(self, call: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(call)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            result = await call(*args, **kwargs)
            self.last_success = time.monotonic()
            return result

        return timed

    def age(self) -> float:
        """Seconds since the last call that came back from the database."""
        return time.monotonic() - self.last_success
