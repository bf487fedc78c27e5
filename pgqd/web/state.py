"""What the handlers share: the settings, the database pool, the read and write sides, templates, tokens."""

from __future__ import annotations

from typing import Any

import asyncpg
import jinja2
from starlette.requests import Request

from pgqd.backend.postgres import PostgresBackend
from pgqd.ops.browse import JobSearch
from pgqd.ops.stats import QueueStats
from pgqd.web import present
from pgqd.web.security import Authenticator, CsrfTokens
from pgqd.web.settings import WebSettings


class WebState:
    def __init__(self, settings: WebSettings) -> None:
        self.settings = settings
        self.csrf = CsrfTokens()
        self.auth = Authenticator(settings.credentials)
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

    async def open(self) -> None:
        self.pool = await asyncpg.create_pool(
            self.settings.dsn,
            min_size=1,
            max_size=self.settings.pool_size,
            # Page queries are short; compiling one to machine code first (JIT) would take longer than running it.
            server_settings={"application_name": "pgqd-web", "jit": "off"},
        )

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    @property
    def stats(self) -> QueueStats:
        return QueueStats(self.pool, self.settings.names)

    @property
    def search(self) -> JobSearch:
        return JobSearch(self.pool, self.settings.names)

    @property
    def backend(self) -> PostgresBackend:
        return PostgresBackend(self.pool, self.settings.names)


def web_state(request: Request) -> WebState:
    state: WebState = request.app.state.web
    return state
