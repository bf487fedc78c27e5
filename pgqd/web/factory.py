"""The Starlette application: routes, the guard, the pool's lifespan and the answers to a database outage."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from pgqd.errors import BackendUnavailable, ReadOnlyDatabase
from pgqd.web import actions, pages, views_history, views_running, workflow_pages
from pgqd.web.guard import Forwarded, Guard, SecurityHeaders
from pgqd.web.params import ParamProblem
from pgqd.web.rendering import bad_request, database_read_only, database_unavailable, unknown
from pgqd.web.settings import WebSettings
from pgqd.web.state import WebState

# Beyond the command timeout a page stops waiting, so that a statement's own timeout is reported first.
PAGE_DEADLINE_MARGIN = 0.5


def within(
    seconds: float, endpoint: Callable[[Request], Awaitable[Response]]
) -> Callable[[Request], Awaitable[Response]]:
    """A page that gives up after ``seconds`` in all: a page queued behind connections that hang would otherwise
    wait for a connection and then for its own statement, each up to the command timeout."""

    async def bounded(request: Request) -> Response:
        try:
            async with asyncio.timeout(seconds):
                return await endpoint(request)
        except TimeoutError:
            raise BackendUnavailable(f"database unavailable: no answer within {seconds:g}s") from None

    return bounded


def create_app(settings: WebSettings) -> Starlette:
    state = WebState(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await state.open()
        try:
            yield
        finally:
            await state.close()

    deadline = settings.timeouts.command + PAGE_DEADLINE_MARGIN
    # Pages only: an action on every matching job works in batches for up to its own time budget.
    page_routes = [*pages.routes(), *views_history.routes(), *views_running.routes(), *workflow_pages.routes()]
    bounded_pages = [Route(r.path, within(deadline, r.endpoint), name=r.name) for r in page_routes]
    routes = [
        *bounded_pages,
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
            # A change sent to a standby (the DSN names one, or the failover is not over yet).
            asyncpg.ReadOnlySQLTransactionError: database_read_only,
            ReadOnlyDatabase: database_read_only,
        },
    )
    app.state.web = state
    return app
