"""Writing configuration back out: the effective config (``pgqd config``) and a commented starter file
(``pgqd init``). Both are generated from the dataclasses, so they cannot disagree with the defaults."""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any

import tomli_w

from pgqd.config.model import (
    Config,
    DatabaseConfig,
    DjangoConfig,
    DjangoQueueConfig,
    EntrypointConfig,
    RetryConfig,
    ScheduleConfig,
)
from pgqd.dsn import mask_dsn

# Values shown for keys that have no default, in the starter file's commented-out examples.
_EXAMPLES: dict[str, Any] = {
    "dsn": "postgresql://app@localhost:5432/app",
    "embedded": ".pgqd/pgdata",
    "resources": "myapp.resources:lifespan",
    "rate_limit": "10/s",
    "timeout": "60s",
    "payload": '{"kind": "nightly"}',
    "processes": 4,
    "password_file": "/etc/pgqd/web-password",
    "token_file": "/etc/pgqd/web-token",
    "command_timeout": "7.5s",
    "max_worker_deaths": 5,
}


def _as_toml(instance: Any) -> dict[str, Any]:
    """A dataclass instance as TOML-ready values; None (unset) keys are left out, as TOML has no null."""
    out: dict[str, Any] = {}
    for f in fields(instance):
        if f.metadata.get("internal"):
            continue
        value = getattr(instance, f.name)
        if value is None:
            continue
        if "section" in f.metadata:
            out[f.name] = _as_toml(value)
        elif "table_of" in f.metadata:
            if value:
                out[f.name] = {name: _as_toml(item) for name, item in value.items()}
        else:
            out[f.name] = f.metadata["kind"].dump(value)
    return out


def render_effective(config: Config) -> str:
    """The configuration in force, every default filled in, as TOML (DSN passwords masked)."""
    data = _as_toml(config)
    if "dsn" in data["database"]:
        data["database"]["dsn"] = mask_dsn(data["database"]["dsn"])
    for secret in ("password", "token"):
        if secret in data["web"]:
            data["web"][secret] = "********"
    return tomli_w.dumps(data)


def _section_lines(instance: Any, header: str) -> list[str]:
    lines = [f"[{header}]"]
    for f in fields(instance):
        if f.metadata.get("internal") or "section" in f.metadata or "table_of" in f.metadata:
            continue
        doc = f.metadata.get("doc", "")
        value = getattr(instance, f.name)
        # A default computed on this machine (the CPU count) is shown as an example, not written down.
        if value is None or f.default_factory is not MISSING:
            example = _EXAMPLES.get(f.name)
            if example is None:
                continue
            lines.append(f"# {tomli_w.dumps({f.name: example}).strip()}  # {doc}")
        else:
            lines.append(f"{tomli_w.dumps({f.name: f.metadata['kind'].dump(value)}).strip()}  # {doc}")
    return lines


def starter_config() -> str:
    """A commented config a new user can start from: every key with its default and what it means."""
    parts = [
        "# pgqd configuration. Every key is optional except the handlers; defaults are shown.",
        '# Durations: "250ms", "30s", "5m", "2h", "7d". Rates: "10/s", "300/m".',
        "",
    ]
    for f in fields(Config):
        section = f.metadata.get("section")
        # Optional sections (default None) are shown commented out at the end.
        if section is None or f.default is None:
            continue
        lines = _section_lines(section(), f.name)
        if section is DatabaseConfig:
            lines.insert(1, "# Where the jobs live. $PGQD_DSN overrides dsn.")
        parts.extend([*lines, ""])
    parts.append("# One section per entrypoint: the name producers enqueue to, and the function that runs its jobs.")
    entry = EntrypointConfig(handler="myapp.tasks:send_email")
    parts.extend([*_section_lines(entry, "entrypoints.send_email"), ""])
    parts.extend([*_section_lines(RetryConfig(), "entrypoints.send_email.retry"), ""])
    parts.append("# Cron schedules: each tick enqueues one job, once across the whole fleet. Uncomment to use.")
    schedule = ScheduleConfig(cron="0 3 * * *", entrypoint="send_email")
    parts.extend(
        line if line.startswith("#") else f"# {line}" for line in _section_lines(schedule, "schedules.nightly")
    )
    parts.append("")
    parts.append("# Django tasks (needs pgqd[django]): each worker process sets up these settings and runs the tasks")
    parts.append(
        '# enqueued through pgqd.contrib.django.PgqdTaskBackend. Queue Q is entrypoint "django.Q"; its section takes'
    )
    parts.append("# the keys of an entrypoint except handler, store_result and keep_payload (results and payloads are")
    parts.append("# always kept). Without [django.queues.*]: queue default.")
    django = DjangoConfig(settings="mysite.settings")
    parts.extend(f"# {line}" for line in _section_lines(django, "django"))
    queue = _section_lines(DjangoQueueConfig(timeout=300.0), "django.queues.default")
    parts.extend(f"# {line}" for line in queue if not line.startswith("#"))
    return "\n".join(parts) + "\n"
