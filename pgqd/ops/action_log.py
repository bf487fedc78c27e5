"""The action log: who changed what, when, and how many jobs it changed. The web UI and the CLI write it; the
web UI shows it. Recording never fails the action it records: the change is made by then."""

from __future__ import annotations

import getpass
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from pgqd.identifiers import Names
from pgqd.models import MAX_JOB_ID
from pgqd.sql import action_log, render

log = structlog.get_logger("pgqd.action_log")
MAX_TARGET = 2000
MAX_DETAIL = 4000


@dataclass(frozen=True)
class Action:
    actor: str
    source: str  # "web" or "cli"
    action: str
    target: str
    requested: int
    changed: int
    detail: str = ""


@dataclass(frozen=True)
class LoggedAction:
    id: int
    at: datetime
    actor: str
    source: str
    action: str
    target: str
    requested: int
    changed: int
    detail: str


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def id_target(ids: list[int]) -> str:
    """A list of job ids as the log shows it: the first ones, then how many more."""
    shown = ", ".join(f"#{i}" for i in ids[:20])
    return shown + (f" and {len(ids) - 20} more" if len(ids) > 20 else "")


def cli_actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


async def record(db: Any, names: Names, action: Action) -> None:
    """Writes one row. A database without the table (a schema older than this version) or one that fails now is
    logged and passed over."""
    try:
        await db.execute(
            render(action_log.RECORD_ACTION, names),
            _clip(action.actor, 200),
            action.source,
            action.action,
            _clip(action.target, MAX_TARGET),
            action.requested,
            action.changed,
            _clip(action.detail, MAX_DETAIL),
        )
    except Exception as exc:  # the change is done; losing its record must not turn it into an error
        log.warning("action not recorded", action=action.action, error=f"{type(exc).__name__}: {exc}")


async def recent(db: Any, names: Names, before: int | None = None, limit: int = 100) -> list[LoggedAction]:
    rows = await db.fetch(render(action_log.RECENT_ACTIONS, names), before or MAX_JOB_ID, limit)
    return [LoggedAction(**dict(r)) for r in rows]
