"""What the supervisor serves over HTTP: /metrics, /healthz and /readyz, all from memory.

Nothing here touches the database, so every answer comes at once whatever the database does. Queue gauges
reach /metrics through the samples a worker writes (see ``queue_gauges.py``); /readyz judges the database by
the workers' check-ins, each of which says when that worker last completed a round trip to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pgqd import __version__
from pgqd.daemon.metrics import SupervisorCollector, render_metrics
from pgqd.daemon.supervisor.http import HttpServer, Response


@dataclass(frozen=True)
class SupervisorView:
    running: int
    wanted: int
    checked_in: int
    stopping: bool
    restarts: dict[str, int]
    rescued: int
    # Seconds since the most recent database round trip of any running worker (None: none has made one yet).
    database_silent_for: float | None
    # Past this many seconds of silence, the database counts as unreachable.
    database_bound: float


class Endpoints:
    def __init__(self, listen: str, metrics_dir: str | None, view: Callable[[], SupervisorView]) -> None:
        self.metrics_dir = metrics_dir
        self.view = view
        self.collector = SupervisorCollector(
            __version__,
            workers=lambda: (self.view().running, self.view().wanted),
            restarts=lambda: self.view().restarts,
            rescued=lambda: self.view().rescued,
        )
        self.server = HttpServer(listen, {"/metrics": self.metrics, "/healthz": self.healthz, "/readyz": self.readyz})

    def metrics(self) -> Response:
        body, content_type = render_metrics(self.metrics_dir, self.collector)
        return Response(200, body, content_type)

    def healthz(self) -> Response:
        # Answering at all proves the supervisor loop turns: this is served from inside it.
        return Response(200, b"ok\n")

    def readyz(self) -> Response:
        problems = readiness_problems(self.view())
        if problems:
            return Response(503, ("not ready: " + "; ".join(problems) + "\n").encode())
        return Response(200, f"ready: {self.view().running} workers\n".encode())


def readiness_problems(view: SupervisorView) -> list[str]:
    """Why the daemon is not ready to serve, in words (empty when it is)."""
    problems = []
    if view.stopping:
        problems.append("stopping")
    if view.running == 0:
        problems.append("no worker running")
    elif view.database_silent_for is None:
        problems.append("database not reached yet by any worker")
    elif view.database_silent_for > view.database_bound:
        problems.append(f"database unreachable for {view.database_silent_for:.0f}s by every worker")
    if view.running and (view.running < view.wanted or view.checked_in < view.wanted):
        problems.append(f"{view.checked_in} of {view.wanted} workers running and checked in")
    return problems
