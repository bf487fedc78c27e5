"""What the engine reports as it works, as a small protocol: the daemon plugs in its Prometheus metrics
(``pgqd.daemon.metrics.WorkerMetrics``), and an engine run by a library user reports to nothing, without
importing the daemon."""

from __future__ import annotations

from typing import Protocol

from pgqd.models import Outcome


class EngineMetrics(Protocol):
    def job_started(self, entrypoint: str, pickup_latency: float) -> None: ...

    def job_ended(self, entrypoint: str, outcome: Outcome, duration: float) -> None: ...

    def claimed(self, count: int) -> None: ...

    def jobs_rescued(self, reason: str, count: int) -> None: ...

    def database_error(self) -> None: ...

    def reconnected(self) -> None: ...

    def publish_soon(self) -> None:
        """Outcomes were written: publish the figures before long."""

    def publish(self) -> None:
        """Publish the figures now (at each heartbeat, and at the worker's end)."""


class NoMetrics:
    """Reports to nothing."""

    def job_started(self, entrypoint: str, pickup_latency: float) -> None:
        return None

    def job_ended(self, entrypoint: str, outcome: Outcome, duration: float) -> None:
        return None

    def claimed(self, count: int) -> None:
        return None

    def jobs_rescued(self, reason: str, count: int) -> None:
        return None

    def database_error(self) -> None:
        return None

    def reconnected(self) -> None:
        return None

    def publish_soon(self) -> None:
        return None

    def publish(self) -> None:
        return None


NO_METRICS: EngineMetrics = NoMetrics()
