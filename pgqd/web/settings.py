"""What ``pgqd web`` is started with: the database, the names, the entrypoints and who may use it."""

from __future__ import annotations

from dataclasses import dataclass, field

from pgqd.config.load import WebCredentials
from pgqd.identifiers import Names


@dataclass(frozen=True)
class WebSettings:
    dsn: str | None
    names: Names
    entrypoints: tuple[str, ...] = ()
    read_only: bool = False
    credentials: WebCredentials = field(default_factory=lambda: WebCredentials("pgqd", None, None))
    pool_size: int = 4
