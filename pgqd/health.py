"""What the supervisor serves over HTTP: /metrics, /healthz and /readyz.

Queue gauges come from one query against the database, made at most every ``QUEUE_TTL`` seconds and only when
someone asks, so a storm of scrapes costs the database one query per few seconds. The same query tells
/readyz whether the database is reachable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg

from pgqd import __version__
from pgqd.http import HttpServer, Response
from pgqd.identifiers import Names
from pgqd.logs import mask_dsn
from pgqd.metrics import SupervisorCollector, render_metrics
from pgqd.stats import QueueStats, depth_rows

QUEUE_TTL = 5.0
QUERY_TIMEOUT = 3.0


@dataclass(frozen=True)
class SupervisorView:
    running: int
    wanted: int
    checked_in: int
    stopping: bool
    restarts: dict[str, int]
    rescued: int


@dataclass
class _QueueCache:
    fetched_at: float = float("-inf")
    rows: list[tuple[str, str, int, float | None]] = field(default_factory=list)
    paused: list[tuple[str, bool]] = field(default_factory=list)
    error: str | None = "not checked yet"


class Endpoints:
    def __init__(
        self, listen: str, dsn: str | None, names: Names, metrics_dir: str | None, view: Callable[[], SupervisorView]
    ) -> None:
        self.dsn = dsn
        self.names = names
        self.metrics_dir = metrics_dir
        self.view = view
        self.queue = _QueueCache()
        self.collector = SupervisorCollector(
            __version__,
            workers=lambda: (self.view().running, self.view().wanted),
            restarts=lambda: self.view().restarts,
            rescued=lambda: self.view().rescued,
            queue=self._queue_rows,
            paused=lambda: self.queue.paused if self.queue.error is None else [],
        )
        self.server = HttpServer(listen, {"/metrics": self.metrics, "/healthz": self.healthz, "/readyz": self.readyz})

    def _refresh_queue(self) -> None:
        if time.monotonic() - self.queue.fetched_at < QUEUE_TTL:
            return

        async def fetch() -> tuple[list[tuple[str, str, int, float | None]], list[tuple[str, bool]]]:
            conn = await asyncpg.connect(
                self.dsn, timeout=QUERY_TIMEOUT, server_settings={"application_name": "pgqd-metrics"}
            )
            try:
                queues = await QueueStats(conn, self.names).queues()
            finally:
                await conn.close()
            depth = [(d.entrypoint, d.status, d.jobs, d.oldest_age) for d in depth_rows(queues)]
            return depth, [(q.entrypoint, q.paused) for q in queues]

        try:
            self.queue.rows, self.queue.paused = asyncio.run(asyncio.wait_for(fetch(), QUERY_TIMEOUT))
            self.queue.error = None
        except Exception as exc:
            self.queue.error = mask_dsn(f"{type(exc).__name__}: {exc}")
        self.queue.fetched_at = time.monotonic()

    def _queue_rows(self) -> list[tuple[str, str, int, float | None]]:
        self._refresh_queue()
        return self.queue.rows if self.queue.error is None else []

    def metrics(self) -> Response:
        body, content_type = render_metrics(self.metrics_dir, self.collector)
        return Response(200, body, content_type)

    def healthz(self) -> Response:
        # Answering at all proves the supervisor loop turns: this is served from inside it.
        return Response(200, b"ok\n")

    def readyz(self) -> Response:
        self._refresh_queue()
        view = self.view()
        problems = []
        if self.queue.error is not None:
            problems.append(f"database unreachable: {self.queue.error}")
        if view.stopping:
            problems.append("stopping")
        if view.running < view.wanted or view.checked_in < view.wanted:
            problems.append(f"{view.checked_in} of {view.wanted} workers running and checked in")
        if problems:
            return Response(503, ("not ready: " + "; ".join(problems) + "\n").encode())
        return Response(200, f"ready: {view.running} workers\n".encode())
