"""Prometheus metrics: what worker processes record, and what the supervisor serves.

Worker processes write their samples to files in a shared directory (prometheus-client's multiprocess mode); the
supervisor serves the sum over all of them, plus its own figures. The queue gauges are samples too, written by
the one worker per daemon that collects them (``queue_gauges.py``): the supervisor never reads the database. Metrics are
created only where they are used, after the process has chosen its mode, and label children are cached so the
per-job cost is a few dictionary lookups and increments.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from pgqd.models import PAUSE_ALL, Finished, Outcome, PauseState

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
BATCH_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
# How stale a scrape may be: workers move their figures into the shared files at least this often when busy.
PUBLISH_EVERY = 0.25


def use_multiprocess_directory(path: str) -> None:
    """Makes this process record into ``path`` (call in each worker process before creating metrics)."""
    from prometheus_client import values

    os.environ[MULTIPROC_ENV] = path
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


def make_multiprocess_directory() -> str:
    path = tempfile.mkdtemp(prefix="pgqd-metrics-")
    os.environ[MULTIPROC_ENV] = path
    return path


def remove_multiprocess_directory(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def mark_process_dead(pid: int, path: str) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


class WorkerMetrics:
    """The samples one worker process records."""

    def __init__(self, registry: Any = None) -> None:
        from prometheus_client import REGISTRY, Counter, Gauge, Histogram

        reg = registry if registry is not None else REGISTRY
        self.completed = Counter(
            "pgqd_jobs_completed", "Job runs ended, by entrypoint and outcome.", ["entrypoint", "outcome"], registry=reg
        )
        self.retries = Counter(
            "pgqd_job_retries", "Job runs that asked for or earned a retry.", ["entrypoint"], registry=reg
        )
        self.duration = Histogram(
            "pgqd_job_duration_seconds", "Handler run time.", ["entrypoint"], buckets=DURATION_BUCKETS, registry=reg
        )
        self.pickup = Histogram(
            "pgqd_job_pickup_latency_seconds",
            "From the time a job was due (enqueue or execute_after) to its start.",
            ["entrypoint"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.in_flight = Gauge(
            "pgqd_jobs_in_flight", "Jobs running now.", ["entrypoint"], multiprocess_mode="livesum", registry=reg
        )
        self.claim_batch = Histogram(
            "pgqd_claim_batch_size", "Jobs returned per claim.", buckets=BATCH_BUCKETS, registry=reg
        )
        self.rescued = Counter(
            "pgqd_jobs_rescued", "Jobs put back in the queue after a lost run.", ["reason"], registry=reg
        )
        self.db_errors = Counter(
            "pgqd_database_errors", "Database calls that failed for want of a connection.", registry=reg
        )
        self.reconnects = Counter("pgqd_database_reconnects", "Listener connections re-established.", registry=reg)
        self.schedule_runs = Counter(
            "pgqd_schedule_runs", "Jobs enqueued by cron schedules.", ["schedule"], registry=reg
        )
        self._cache: dict[tuple[str, ...], Any] = {}
        # Per-job figures gather here and reach the shared files in bulk (``publish``): a multiprocess sample
        # update costs several microseconds, which per job would halve a no-op worker's throughput.
        self._counts: dict[tuple[str, ...], float] = defaultdict(float)
        self._observed: dict[tuple[str, ...], _Observations] = {}
        # The figures of every job, by entrypoint: one lookup per job start and end.
        self._by_entrypoint: dict[str, _EntrypointFigures] = {}
        self._published_at = 0.0

    def _child(self, family: Any, kind: str, *labels: str) -> Any:
        key = (kind, *labels)
        child = self._cache.get(key)
        if child is None:
            child = family.labels(*labels) if labels else family
            self._cache[key] = child
        return child

    def _observe(self, kind: str, bounds: tuple[float, ...], value: float, *labels: str) -> None:
        key = (kind, *labels)
        observed = self._observed.get(key)
        if observed is None:
            observed = self._observed[key] = _Observations(bounds)
        observed.add(value)

    def _figures_of(self, entrypoint: str) -> _EntrypointFigures:
        figures = self._by_entrypoint[entrypoint] = _EntrypointFigures()
        return figures

    def job_started(self, entrypoint: str, pickup_latency: float) -> None:
        figures = self._by_entrypoint.get(entrypoint) or self._figures_of(entrypoint)
        figures.started += 1
        figures.pickup.add(pickup_latency if pickup_latency > 0.0 else 0.0)

    def job_ended(self, entrypoint: str, outcome: Outcome, duration: float) -> None:
        figures = self._by_entrypoint.get(entrypoint) or self._figures_of(entrypoint)
        figures.ended += 1
        label: str
        if isinstance(outcome, Finished):
            label = outcome.status
            figures.duration.add(duration)
        else:
            label = _REQUEUED_LABELS[outcome.kind]
            if outcome.kind == "retry":
                figures.retries += 1
            elif outcome.kind == "hold":
                figures.duration.add(duration)
        ended = figures.ended_as
        ended[label] = ended.get(label, 0) + 1

    def claimed(self, count: int) -> None:
        self._observe("batch", BATCH_BUCKETS, count)

    def jobs_rescued(self, reason: str, count: int) -> None:
        if count:
            self._counts[("rescued", reason)] += count

    def database_error(self) -> None:
        self._counts[("db_errors",)] += 1

    def reconnected(self) -> None:
        self._counts[("reconnects",)] += 1

    def schedule_fired(self, schedule: str, jobs: int) -> None:
        self._counts[("schedule", schedule)] += jobs

    def publish_soon(self) -> None:
        """``publish``, at most every ``PUBLISH_EVERY`` seconds (called after every flush of outcomes)."""
        now = time.monotonic()
        if now - self._published_at >= PUBLISH_EVERY:
            self.publish()

    def publish(self) -> None:
        """Moves what gathered since the last call into the Prometheus samples."""
        self._published_at = time.monotonic()
        families = {
            "flight": self.in_flight,
            "retries": self.retries,
            "completed": self.completed,
            "rescued": self.rescued,
            "db_errors": self.db_errors,
            "reconnects": self.reconnects,
            "schedule": self.schedule_runs,
        }
        by_entrypoint, self._by_entrypoint = self._by_entrypoint, {}
        for name, figures in by_entrypoint.items():
            figures.count_into(self._counts, name)
        counts, self._counts = self._counts, defaultdict(float)
        for (kind, *labels), amount in counts.items():
            if amount:
                self._child(families[kind], kind, *labels).inc(amount)
        histograms = {"pickup": self.pickup, "duration": self.duration, "batch": self.claim_batch}
        observed, self._observed = self._observed, {}
        for name, figures in by_entrypoint.items():
            for kind, observations in (("pickup", figures.pickup), ("duration", figures.duration)):
                if any(observations.counts):
                    observations.publish_to(self._child(histograms[kind], kind, name))
        for (kind, *labels), observations in observed.items():
            observations.publish_to(self._child(histograms[kind], kind, *labels))


_REQUEUED_LABELS = {"retry": "retried", "hold": "held", "release": "released"}


class _EntrypointFigures:
    """What one entrypoint's jobs did since the last ``publish``."""

    __slots__ = ("duration", "ended", "ended_as", "pickup", "retries", "started")

    def __init__(self) -> None:
        self.started = 0
        self.ended = 0
        self.retries = 0
        self.ended_as: dict[str, int] = {}  # runs ended, by outcome label
        self.pickup = _Observations(LATENCY_BUCKETS)
        self.duration = _Observations(DURATION_BUCKETS)

    def count_into(self, counts: dict[tuple[str, ...], float], entrypoint: str) -> None:
        counts[("flight", entrypoint)] += self.started - self.ended
        counts[("retries", entrypoint)] += self.retries
        for label, runs in self.ended_as.items():
            counts[("completed", entrypoint, label)] += runs


class _Observations:
    """Histogram observations counted per bucket, to be added to a Prometheus histogram in one go."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def add(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def publish_to(self, histogram: Any) -> None:
        buckets = getattr(histogram, "_buckets", None)
        total = getattr(histogram, "_sum", None)
        if buckets is None or total is None or len(buckets) != len(self.counts):
            # Another prometheus-client layout: replay each bucket's count at its bound (the sum is approximate).
            for bound, count in zip((*self.bounds, self.bounds[-1]), self.counts, strict=True):
                for _ in range(count):
                    histogram.observe(bound)
            return
        # prometheus-client keeps per-bucket (not cumulative) counts, the last one for +Inf.
        for value, count in zip(buckets, self.counts, strict=True):
            if count:
                value.inc(count)
        total.inc(self.total)


class QueueGaugeSamples:
    """The queue gauges, as the worker that collects them records them. A series once seen stays, at 0 when its
    jobs are gone (a vanished series would keep its last value in Prometheus' eyes until it goes stale)."""

    def __init__(self, count_limit: int, served: Iterable[str], registry: Any = None) -> None:
        from prometheus_client import REGISTRY, Gauge

        reg = registry if registry is not None else REGISTRY
        # livemax: the samples of a worker vanish with it, and while two collectors overlap (a reload) the larger
        # figure wins.
        self.depth = Gauge(
            "pgqd_queue_depth",
            f"Jobs in the queue, by entrypoint and status; counted up to {count_limit} per series (a value of"
            f" {count_limit} means at least that many).",
            ["entrypoint", "status"],
            multiprocess_mode="livemax",
            registry=reg,
        )
        self.age = Gauge(
            "pgqd_oldest_job_age_seconds",
            "Age of the oldest job that could run now, by entrypoint (the oldest head of each priority; 0: none).",
            ["entrypoint"],
            multiprocess_mode="livemax",
            registry=reg,
        )
        self.paused = Gauge(
            "pgqd_entrypoint_paused",
            "1 if the entrypoint is paused fleet-wide (pgqd pause), else 0.",
            ["entrypoint"],
            multiprocess_mode="livemax",
            registry=reg,
        )
        self._depth_seen: set[tuple[str, str]] = {(entrypoint, "queued") for entrypoint in served}
        self._age_seen: set[str] = {entrypoint for entrypoint, _ in self._depth_seen}
        self.update([])

    def update(
        self, rows: Iterable[tuple[str, str, int, float | None]], pauses: Iterable[tuple[str, bool]] = ()
    ) -> None:
        """``pauses`` are the rows of the pauses table (see ``PauseState``)."""
        depth: dict[tuple[str, str], int] = dict.fromkeys(self._depth_seen, 0)
        age: dict[str, float] = dict.fromkeys(self._age_seen, 0.0)
        for entrypoint, status, jobs, oldest_age in rows:
            depth[(entrypoint, status)] = jobs
            age.setdefault(entrypoint, 0.0)
            if oldest_age is not None:
                age[entrypoint] = max(age[entrypoint], oldest_age)
        for (entrypoint, status), jobs in depth.items():
            self.depth.labels(entrypoint, status).set(jobs)
        for entrypoint, seconds in age.items():
            self.age.labels(entrypoint).set(max(seconds, 0.0))
        self._depth_seen, self._age_seen = set(depth), set(age)
        stored = list(pauses)
        state = PauseState.from_rows(stored)
        for entrypoint in age.keys() | {name for name, _ in stored if name != PAUSE_ALL}:
            self.paused.labels(entrypoint).set(1 if state.is_paused(entrypoint) else 0)


class SupervisorCollector:
    """Figures only the supervisor knows, produced at scrape time: build, workers, restarts, rescues."""

    def __init__(
        self,
        version: str,
        workers: Callable[[], tuple[int, int]],
        restarts: Callable[[], dict[str, int]],
        rescued: Callable[[], int],
    ) -> None:
        self._version = version
        self._workers = workers
        self._restarts = restarts
        self._rescued = rescued

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        info = GaugeMetricFamily("pgqd_build_info", "pgqd version and Python.", labels=["version", "python"])
        info.add_metric([self._version, platform.python_version()], 1)
        yield info
        running, wanted = self._workers()
        yield GaugeMetricFamily("pgqd_workers_running", "Worker processes running (not draining).", value=running)
        yield GaugeMetricFamily("pgqd_workers_wanted", "Worker processes the supervisor keeps.", value=wanted)
        restarts = CounterMetricFamily(
            "pgqd_worker_restarts", "Worker processes that ended, by reason.", labels=["reason"]
        )
        for reason, count in sorted(self._restarts().items()):
            restarts.add_metric([reason], count)
        yield restarts
        yield CounterMetricFamily(
            "pgqd_dead_worker_jobs_rescued",
            "Jobs of dead worker processes requeued by the supervisor.",
            value=self._rescued(),
        )


def render_metrics(path: str | None, extra: Any) -> tuple[bytes, str]:
    """The Prometheus text of every worker's samples (from ``path``) plus ``extra`` collectors."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

    registry = CollectorRegistry()
    if path:
        multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    registry.register(extra)
    return generate_latest(registry), CONTENT_TYPE_LATEST
