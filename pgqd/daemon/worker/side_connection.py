"""A connection of its own for a duty of the lead worker beside the engine (the queue gauges, the jobs table's
vacuum), so that neither holds one of the pool's connections nor waits behind its calls.

It is opened when first needed and terminated after any failure, not closed: a call that timed out may have
left it hung, and a close would wait on it. A run of failures is logged once, when it starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg

from pgqd.dsn import mask_dsn


class SideConnection:
    def __init__(
        self,
        dsn: str | None,
        application_name: str,
        timeout: float,
        logger: Any,
        failing: str,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.dsn = dsn
        self.timeout = timeout
        # No JIT, as on the worker's pool: the duties' statements are short, and over a deep backlog a plan's
        # estimated cost can pass the JIT thresholds, which would compile it anew on every run.
        self.settings = {"application_name": application_name, "jit": "off", **(settings or {})}
        self._log = logger
        self._failing_message = failing
        self._conn: Any = None
        self.failing = False

    async def get(self) -> Any:
        if self._conn is None:
            self._conn = await asyncpg.connect(self.dsn, timeout=self.timeout, server_settings=self.settings)
        return self._conn

    def failed(self, exc: BaseException) -> None:
        """After any error of the database or the network: the next call opens a new connection."""
        self.close()
        if not self.failing:
            self._log.warning(self._failing_message, error=mask_dsn(f"{type(exc).__name__}: {exc}"))
        self.failing = True

    def succeeded(self) -> bool:
        """True when this ends a run of failures."""
        recovered, self.failing = self.failing, False
        return recovered

    def close(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None
