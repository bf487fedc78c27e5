"""The dispatch loop's wake-up: a flag that events set, and one sleeper that waits for it or for a time.

``asyncio.Event`` with ``asyncio.timeout`` did the same, at a cost the loop paid at every sleep: a ``Timeout``
object, a look-up of the current task, and on Python 3.11 a ``getpid()`` system call for each of the three or four
look-ups of the running loop they make (2-3 % of a busy worker's samples, py-spy). Here a sleep is one future and
one timer on the loop the worker runs on.
"""

from __future__ import annotations

import asyncio


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Wakeup:
    """Set by events, cleared by the sleeper once it has acted on them. One sleeper at a time."""

    def __init__(self) -> None:
        self._set = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._set = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set

    async def wait(self, loop: asyncio.AbstractEventLoop, timeout: float) -> bool:
        """Waits until set or until ``timeout`` seconds have passed; True if set."""
        if self._set:
            return True
        if self._waiter is not None:
            raise RuntimeError("a Wakeup has one sleeper at a time: a second one would never be woken")
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
        return self._set
