"""Waiting for a condition with a deadline, so that no test can hang."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def wait_until(check: Callable[[], Awaitable[T]], *, timeout: float, what: str, interval: float = 0.05) -> T:
    """Calls ``check`` until it returns something truthy and returns that; fails the test after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last value: {value!r})")
        await asyncio.sleep(interval)
