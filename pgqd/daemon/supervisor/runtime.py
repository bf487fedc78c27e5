"""Turning a validated config into what the engine runs: entrypoints with their handlers, and settings."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from pgqd.backend.bounded import DatabaseTimeouts
from pgqd.config.model import Config, EntrypointConfig
from pgqd.daemon.worker.plan import WorkerPlan
from pgqd.entrypoint import Entrypoint, RetryPolicy
from pgqd.identifiers import Names
from pgqd.models import ScheduleSpec
from pgqd.payload import encode_payload
from pgqd.worker.engine import WorkerSettings


def build_entrypoint(name: str, entry: EntrypointConfig, handler: Any, max_worker_deaths: int = 3) -> Entrypoint:
    """``max_worker_deaths``: [workers]'s, for an entrypoint that sets none of its own."""
    retry = entry.retry
    return Entrypoint(
        name=name,
        handler=handler,
        concurrency_limit=entry.concurrency_limit,
        rate_limit=entry.rate_limit,
        timeout=entry.timeout,
        retry=RetryPolicy(
            max_attempts=retry.max_attempts,
            backoff=retry.backoff,  # type: ignore[arg-type]  # validated against the same choices
            initial=retry.initial,
            maximum=retry.max,
            jitter=retry.jitter,
        ),
        on_failure=entry.on_failure,  # type: ignore[arg-type]
        store_result=entry.store_result,
        max_worker_deaths=entry.max_worker_deaths or max_worker_deaths,
        keep_payload=entry.keep_payload,
    )


def build_entrypoints(config: Config, handlers: Mapping[str, Any]) -> list[Entrypoint]:
    deaths = config.workers.max_worker_deaths
    return [build_entrypoint(name, entry, handlers[name], deaths) for name, entry in config.served_entrypoints.items()]


def worker_settings(config: Config) -> WorkerSettings:
    workers = config.workers
    return WorkerSettings(
        concurrency=workers.concurrency,
        batch_size=workers.batch_size,
        poll_interval=workers.poll_interval,
        worker_timeout=workers.worker_timeout,
        shutdown_timeout=workers.shutdown_timeout,
        retention=config.retention.log or None,
    )


def database_timeouts(config: Config) -> DatabaseTimeouts:
    database = config.database
    return DatabaseTimeouts.derive(config.workers.worker_timeout, database.command_timeout, database.connect_timeout)


def build_schedules(config: Config) -> list[ScheduleSpec]:
    return [
        ScheduleSpec(
            name=name,
            cron=schedule.cron,
            entrypoint=schedule.entrypoint,
            payload=encode_payload(schedule.payload),
            priority=schedule.priority,
            timezone=schedule.timezone,
            enabled=schedule.enabled,
            misfire=schedule.misfire,
        )
        for name, schedule in config.schedules.items()
    ]


def names(config: Config) -> Names:
    return Names(config.database.schema, config.database.prefix)


def worker_plan(
    config: Config,
    handlers: Mapping[str, Any],
    dsn: str | None,
    check_in_fd: int,
    metrics_dir: str | None,
    *,
    lead: bool,
    queue_gauges: bool,
) -> WorkerPlan:
    """What one worker process runs; the ``lead`` worker also fires the schedules, vacuums the jobs table (unless
    ``[database] vacuum_jobs`` is off), keeps the log's partitions, rolls up the log for the history charts and,
    with ``queue_gauges``, collects the queue gauges."""
    limit = config.workers.max_jobs_per_worker
    # Jitter spreads the recycling of workers started together, so they never all restart at once.
    max_jobs = int(limit * random.uniform(1.0, 1.1)) if limit else 0
    return WorkerPlan(
        dsn=dsn,
        names=names(config),
        pool_size=config.database.pool_size,
        entrypoints=build_entrypoints(config, handlers),
        settings=replace(worker_settings(config), max_jobs=max_jobs),
        resources=config.workers.resources,
        check_in_fd=check_in_fd,
        check_in_every=min(1.0, config.workers.worker_timeout / 4),
        schedules=build_schedules(config) if lead else (),
        metrics_dir=metrics_dir,
        queue_gauges=lead and queue_gauges,
        upkeep=lead and config.database.vacuum_jobs,
        log_rollup=lead,
        log_partitions=lead,
        django_settings=config.django.settings if config.django else None,
        timeouts=database_timeouts(config),
    )
