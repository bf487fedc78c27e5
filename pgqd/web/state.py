"""What the handlers share: the settings, the database pool, the read and write sides, templates, tokens."""

from __future__ import annotations

from typing import Any

import jinja2
from starlette.requests import Request

from pgqd.backend.bounded import DatabaseHealth
from pgqd.backend.postgres import PostgresBackend
from pgqd.ops.browse import JobSearch
from pgqd.ops.stats import READ_SIDE_SETTINGS, QueueStats
from pgqd.web import present
from pgqd.web.pool import WebPool
from pgqd.web.security import Authenticator, CsrfTokens, LoginThrottle
from pgqd.web.settings import WebSettings


class WebState:
    def __init__(self, settings: WebSettings) -> None:
        self.settings = settings
        self.csrf = CsrfTokens()
        self.auth = Authenticator(settings.credentials)
        self.throttle = LoginThrottle(settings.login_failures, settings.login_window)
        self.health = DatabaseHealth()
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("pgqd.web", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters.update(
            age=present.age, when=present.when, ago=present.ago, payload_head=present.payload_head
        )
        self.templates.globals["count"] = present.count
        self.pool: Any = None
        self.read_pool: Any = None

    async def open(self) -> None:
        self.pool = await self._open_pool(self.settings.dsn)
        if self.settings.read_dsn is not None:
            self.read_pool = await self._open_pool(self.settings.read_dsn)

    async def _open_pool(self, dsn: str | None) -> Any:
        timeouts = self.settings.timeouts
        # The daemon's bounds (pgqd.backend.bounded): every statement, every wait for a connection and every
        # connect is bounded, and sockets carry TCP keepalives, so a database that stops answering turns pages
        # into 503s within the command timeout instead of holding the pool's connections for minutes.
        return await WebPool.open(
            dsn,
            self.settings.pool_size,
            timeouts,
            self.health,
            timeout=timeouts.connect,
            command_timeout=timeouts.command,
            # Page queries are short; compiling one to machine code first (JIT) would take longer than running it.
            server_settings={"application_name": "pgqd-web", **READ_SIDE_SETTINGS, **timeouts.server_settings},
        )

    async def close(self) -> None:
        for pool in (self.read_pool, self.pool):
            if pool is not None:
                await pool.close()

    @property
    def stats(self) -> QueueStats:
        """The read pages' queries, on the replica when there is one (it may trail the primary a little)."""
        return QueueStats(self.read_pool or self.pool, self.settings.names, read_side=True)

    @property
    def primary_stats(self) -> QueueStats:
        """The same queries on the primary, for an action that acts on what it reads."""
        return QueueStats(self.pool, self.settings.names, read_side=True)

    @property
    def search(self) -> JobSearch:
        return JobSearch(self.read_pool or self.pool, self.settings.names)

    @property
    def backend(self) -> PostgresBackend:
        return PostgresBackend(self.pool, self.settings.names)


def web_state(request: Request) -> WebState:
    state: WebState = request.app.state.web
    return state
