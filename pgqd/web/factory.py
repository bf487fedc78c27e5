"""The Starlette application: routes, the guard, the pool's lifespan and the answers to a database outage."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from pgqd.errors import BackendUnavailable
from pgqd.web import actions, pages
from pgqd.web.guard import Forwarded, Guard, SecurityHeaders
from pgqd.web.params import ParamProblem
from pgqd.web.rendering import bad_request, database_unavailable, unknown
from pgqd.web.settings import WebSettings
from pgqd.web.state import WebState


def create_app(settings: WebSettings) -> Starlette:
    state = WebState(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await state.open()
        try:
            yield
        finally:
            await state.close()

    routes = [
        *pages.routes(),
        *actions.routes(),
        Mount("/static", StaticFiles(packages=[("pgqd.web", "static")]), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(Forwarded, trusted=settings.trusted_proxies),
            Middleware(SecurityHeaders),
            Middleware(Guard),
        ],
        lifespan=lifespan,
        exception_handlers={
            404: unknown,
            ParamProblem: bad_request,
            # A call that ran out of time or lost its connection (pgqd.backend.bounded).
            BackendUnavailable: database_unavailable,
            TimeoutError: database_unavailable,
            OSError: database_unavailable,
            asyncpg.InterfaceError: database_unavailable,
            asyncpg.PostgresConnectionError: database_unavailable,
            asyncpg.CannotConnectNowError: database_unavailable,
            asyncpg.AdminShutdownError: database_unavailable,
            asyncpg.InvalidCatalogNameError: database_unavailable,
            # What a pooled connection whose server process was just terminated raises on its next use.
            asyncpg.InternalClientError: database_unavailable,
        },
    )
    app.state.web = state
    return app
