"""What a worker process needs to run, prepared by the supervisor before it forks: the one thing the supervisor
and a worker's modules share (the supervisor builds it, the worker's main and its duties read it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pgqd.backend.bounded import DatabaseTimeouts
from pgqd.entrypoint import Entrypoint
from pgqd.identifiers import Names
from pgqd.models import ScheduleSpec
from pgqd.worker.settings import WorkerSettings


@dataclass(frozen=True)
class WorkerPlan:
    """Everything a worker process needs, prepared by the supervisor before it forks."""

    dsn: str | None
    names: Names
    pool_size: int
    entrypoints: Sequence[Entrypoint]
    settings: WorkerSettings
    resources: str | None
    check_in_fd: int
    check_in_every: float
    # The schedules this process fires: all of them in one worker per daemon, none in the others.
    schedules: Sequence[ScheduleSpec] = ()
    # Where this process records its Prometheus samples for the supervisor to serve (None: not recorded).
    metrics_dir: str | None = None
    # The time bound of every database call (from [database] command_timeout and connect_timeout).
    timeouts: DatabaseTimeouts = field(default_factory=DatabaseTimeouts)
    # Whether this process collects the queue gauges (one worker per daemon, when metrics are served).
    queue_gauges: bool = False
    # Whether this process vacuums the jobs table when dead rows pile up (one worker per daemon; see vacuum.py).
    upkeep: bool = False
    # Whether this process keeps the log's hourly rollup for the history charts (one worker per daemon).
    log_rollup: bool = False
    # Whether this process keeps the log's partitions: created ahead, dropped past retention (see log_partitions.py).
    log_partitions: bool = False
    # The Django settings module this process sets up before it runs Django tasks (None: no Django).
    django_settings: str | None = None
