"""What a driver adapter offers pgqd's producer operations: one statement with its arguments, its rows back."""

from __future__ import annotations

from typing import Any, Protocol

from pgqd.backend.operations import Rows


class SyncExecutor(Protocol):
    """Runs one statement (``$n`` placeholders) with its arguments on a blocking driver; returns its rows."""

    def fetch(self, sql: str, args: tuple[Any, ...]) -> Rows: ...

    def close(self) -> None: ...


class AsyncExecutor(Protocol):
    async def fetch(self, sql: str, args: tuple[Any, ...]) -> Rows: ...

    async def close(self) -> None: ...
