"""The configuration as frozen dataclasses. Every default lives here, and ``pgqd config`` prints them.

Each field's ``metadata["kind"]`` says how its TOML value is checked and converted (see ``kinds``);
``metadata["doc"]`` is the one-line description used in the starter file and the reference.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgqd.config.kinds import (
    IMPORT_PATH,
    LISTEN_ADDRESS,
    Boolean,
    Choice,
    Cron,
    Duration,
    Integer,
    NetworkList,
    RateKind,
    Text,
    TimeZone,
)
from pgqd.identifiers import MAX_IDENTIFIER_BYTES, MAX_PREFIX_LENGTH
from pgqd.models import DJANGO_ENTRYPOINT_PREFIX
from pgqd.units import Rate

# The rules of pgqd/identifiers.py, which Names applies again: a config that passes here builds its names.
IDENTIFIER = Text(
    rf"[a-z_][a-z0-9_]{{0,{MAX_IDENTIFIER_BYTES - 1}}}",
    "use lowercase letters, digits and underscores, starting with a letter or underscore, "
    f"at most {MAX_IDENTIFIER_BYTES} characters",
)
PREFIX = Text(
    rf"[a-z_][a-z0-9_]{{0,{MAX_PREFIX_LENGTH - 1}}}",
    f"use lowercase letters, digits and underscores, at most {MAX_PREFIX_LENGTH} characters",
)


def spec(kind: Any, doc: str, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "doc": doc, **extra}


@dataclass(frozen=True)
class DatabaseConfig:
    dsn: str | None = field(
        default=None,
        metadata=spec(Text(), "connection URI; $PGQD_DSN overrides it; unset: the libpq PG* variables"),
    )
    schema: str = field(default="public", metadata=spec(IDENTIFIER, "schema of the pgqd tables"))
    prefix: str = field(default="pgqd_", metadata=spec(PREFIX, "name prefix of the pgqd tables"))
    embedded: str | None = field(
        default=None,
        metadata=spec(Text(), "data directory of a private PostgreSQL started with the daemon (needs pgqd[embedded])"),
    )
    pool_size: int = field(default=3, metadata=spec(Integer(2, 100), "connections per worker process, besides LISTEN"))
    command_timeout: float | None = field(
        default=None,
        metadata=spec(
            Duration(0.1),
            "bound on every database call; unset: worker_timeout / 4, kept between 1s and 15s",
        ),
    )
    connect_timeout: float = field(default=5.0, metadata=spec(Duration(0.1), "bound on opening a connection"))
    vacuum_jobs: bool = field(
        default=True,
        metadata=spec(
            Boolean(), "one worker per daemon vacuums the jobs table once claimed jobs leave many dead rows in it"
        ),
    )


@dataclass(frozen=True)
class WorkersConfig:
    processes: int = field(
        default_factory=lambda: os.cpu_count() or 1,
        metadata=spec(Integer(1, 512), "worker processes (default: the number of CPUs)"),
    )
    concurrency: int = field(default=32, metadata=spec(Integer(1, 10_000), "jobs in flight per worker process"))
    batch_size: int = field(default=10, metadata=spec(Integer(1, 10_000), "jobs claimed per round trip"))
    poll_interval: float = field(default=5.0, metadata=spec(Duration(), "backup poll when no notification arrives"))
    worker_timeout: float = field(
        default=30.0, metadata=spec(Duration(0.5), "silence after which a worker counts as dead and its jobs return")
    )
    shutdown_timeout: float = field(
        default=30.0, metadata=spec(Duration(allow_zero=True), "how long running jobs may finish on SIGTERM")
    )
    max_jobs_per_worker: int = field(
        default=0, metadata=spec(Integer(0), "recycle a worker process after this many jobs (0 = never)")
    )
    max_memory_mb: int = field(
        default=0, metadata=spec(Integer(0), "recycle a worker process above this RSS in MiB (0 = never)")
    )
    max_worker_deaths: int = field(
        default=3,
        metadata=spec(
            Integer(1, 1000), "deaths of its worker while it runs alone before a job is given up (per entrypoint too)"
        ),
    )
    resources: str | None = field(
        default=None,
        metadata=spec(IMPORT_PATH, "async context manager factory run once per worker; yields ctx.resources"),
    )


@dataclass(frozen=True)
class MetricsConfig:
    listen: str = field(
        default="127.0.0.1:9464", metadata=spec(LISTEN_ADDRESS, "address of /metrics, /healthz and /readyz")
    )
    enabled: bool = field(default=True, metadata=spec(Boolean(), "serve the HTTP endpoints at all"))


@dataclass(frozen=True)
class WebConfig:
    listen: str = field(
        default="127.0.0.1:9465",
        metadata=spec(LISTEN_ADDRESS, "address of `pgqd web`; off loopback it needs a password or a token"),
    )
    read_only: bool = field(default=False, metadata=spec(Boolean(), "show everything, change nothing"))
    username: str = field(default="pgqd", metadata=spec(Text(), "user name for HTTP basic authentication"))
    password: str | None = field(
        default=None, metadata=spec(Text(), "HTTP basic password; $PGQD_WEB_PASSWORD overrides it")
    )
    password_file: str | None = field(
        default=None, metadata=spec(Text(), "file holding the HTTP basic password (first line)")
    )
    token: str | None = field(default=None, metadata=spec(Text(), "bearer token; $PGQD_WEB_TOKEN overrides it"))
    token_file: str | None = field(default=None, metadata=spec(Text(), "file holding the bearer token (first line)"))
    trusted_proxies: tuple[str, ...] = field(
        default=("127.0.0.1", "::1"),
        metadata=spec(
            NetworkList(),
            "reverse proxies (addresses or networks) whose X-Forwarded-For/-Proto/-Host are believed",
        ),
    )


@dataclass(frozen=True)
class LoggingConfig:
    level: str = field(
        default="info", metadata=spec(Choice(("debug", "info", "warning", "error")), "lowest level logged")
    )
    format: str = field(
        default="auto",
        metadata=spec(Choice(("auto", "json", "console")), "json lines, console text, or auto (console on a TTY)"),
    )


@dataclass(frozen=True)
class RetentionConfig:
    log: float = field(
        default=7 * 86400.0,
        metadata=spec(
            Duration(allow_zero=True),
            'keep finished jobs in the log this long, by whole days: up to a day more ("0s" = forever)',
        ),
    )


@dataclass(frozen=True)
class RetryConfig:
    max_attempts: int = field(
        default=1,
        metadata=spec(Integer(1, 1_000_000), "runs that count, the first included (not one lost beside other jobs)"),
    )
    backoff: str = field(
        default="exponential", metadata=spec(Choice(("exponential", "linear", "constant")), "growth of the wait")
    )
    initial: float = field(default=1.0, metadata=spec(Duration(), "wait after the first failure"))
    max: float = field(default=600.0, metadata=spec(Duration(), "longest wait between runs"))
    jitter: bool = field(default=True, metadata=spec(Boolean(), "spread retries randomly over 50-100% of the wait"))


@dataclass(frozen=True)
class EntrypointConfig:
    handler: str = field(metadata=spec(IMPORT_PATH, "the handler function, as module:attribute"))
    concurrency_limit: int = field(
        default=0, metadata=spec(Integer(0, 1_000_000), "jobs running at once across the fleet (0 = unlimited)")
    )
    rate_limit: Rate | None = field(
        default=None, metadata=spec(RateKind(), 'jobs started per period across the fleet, e.g. "10/s", "300/m"')
    )
    timeout: float | None = field(default=None, metadata=spec(Duration(), "cancel a run after this long"))
    on_failure: str = field(
        default="delete",
        metadata=spec(Choice(("delete", "hold")), "after the last attempt: log it (delete) or keep it (hold)"),
    )
    store_result: bool = field(default=False, metadata=spec(Boolean(), "keep the handler's return value (JSON)"))
    max_worker_deaths: int | None = field(
        default=None,
        metadata=spec(
            Integer(1, 1000), "deaths of its worker while running alone before a job is given up ([workers])"
        ),
    )
    keep_payload: bool = field(
        default=False, metadata=spec(Boolean(), "finished jobs keep their payload in the log (shown on job pages)")
    )
    retry: RetryConfig = field(default_factory=RetryConfig, metadata={"section": RetryConfig, "doc": "retry policy"})


@dataclass(frozen=True)
class ScheduleConfig:
    cron: str = field(metadata=spec(Cron(), '5 fields, or 6 with seconds last, e.g. "0 3 * * *"'))
    entrypoint: str = field(metadata=spec(Text(), "the entrypoint each tick enqueues a job for"))
    payload: str | None = field(default=None, metadata=spec(Text(non_empty=False), "payload of each job"))
    priority: int = field(default=0, metadata=spec(Integer(-(2**31) + 1, 2**31 - 1), "priority of each job"))
    timezone: str = field(default="UTC", metadata=spec(TimeZone(), "IANA time zone the cron is read in"))
    enabled: bool = field(default=True, metadata=spec(Boolean(), "false pauses the schedule"))
    misfire: str = field(
        default="coalesce",
        metadata=spec(Choice(("coalesce", "skip", "all")), "after downtime: run once, skip, or run every missed tick"),
    )


# Django tasks: each Django queue is served as the entrypoint DJANGO_ENTRYPOINT_PREFIX + queue, run by pgqd's own
# task runner.
DJANGO_TASK_RUNNER = "pgqd.contrib.django.worker:run_task"
MODULE_PATH = Text(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", 'use a dotted module path, e.g. "mysite.settings"')


@dataclass(frozen=True)
class DjangoQueueConfig(EntrypointConfig):
    """An entrypoint whose handler is pgqd's Django task runner; results and payloads (which name the task and
    hold its arguments) are always kept for ``get_result``."""

    handler: str = field(default=DJANGO_TASK_RUNNER, metadata={"internal": True})
    store_result: bool = field(default=True, metadata={"internal": True})
    keep_payload: bool = field(default=True, metadata={"internal": True})


def _default_django_queues() -> dict[str, DjangoQueueConfig]:
    return {"default": DjangoQueueConfig()}


@dataclass(frozen=True)
class DjangoConfig:
    settings: str = field(
        metadata=spec(MODULE_PATH, "Django settings module each worker process sets up (DJANGO_SETTINGS_MODULE)")
    )
    queues: dict[str, DjangoQueueConfig] = field(
        default_factory=_default_django_queues,
        metadata={"table_of": DjangoQueueConfig, "doc": 'Django queues served, each as entrypoint "django.<queue>"'},
    )


@dataclass(frozen=True)
class Config:
    database: DatabaseConfig = field(default_factory=DatabaseConfig, metadata={"section": DatabaseConfig})
    workers: WorkersConfig = field(default_factory=WorkersConfig, metadata={"section": WorkersConfig})
    metrics: MetricsConfig = field(default_factory=MetricsConfig, metadata={"section": MetricsConfig})
    logging: LoggingConfig = field(default_factory=LoggingConfig, metadata={"section": LoggingConfig})
    retention: RetentionConfig = field(default_factory=RetentionConfig, metadata={"section": RetentionConfig})
    web: WebConfig = field(default_factory=WebConfig, metadata={"section": WebConfig})
    entrypoints: dict[str, EntrypointConfig] = field(default_factory=dict, metadata={"table_of": EntrypointConfig})
    schedules: dict[str, ScheduleConfig] = field(default_factory=dict, metadata={"table_of": ScheduleConfig})
    django: DjangoConfig | None = field(default=None, metadata={"section": DjangoConfig})
    # Where it was read from (relative paths in the file are relative to its folder); not a TOML key.
    source: Path | None = field(default=None, compare=False, metadata={"internal": True})

    @property
    def served_entrypoints(self) -> dict[str, EntrypointConfig]:
        """The entrypoints the daemon runs: the [entrypoints] sections plus one per Django queue."""
        served = dict(self.entrypoints)
        if self.django is not None:
            for queue, entry in self.django.queues.items():
                served[DJANGO_ENTRYPOINT_PREFIX + queue] = entry
        return served

    def resolve_path(self, path: str) -> Path:
        candidate = Path(path).expanduser()
        if candidate.is_absolute() or self.source is None:
            return candidate
        return self.source.parent / candidate
