"""The web UI as a Starlette application: settings, the database pool, the request guard and page rendering."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, unquote

import asyncpg
import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from pgqd.backend.postgres import PostgresBackend
from pgqd.config.load import WebCredentials
from pgqd.daemon.logs import mask_dsn
from pgqd.identifiers import Names
from pgqd.ops.browse import JobSearch
from pgqd.ops.stats import QueueStats
from pgqd.web import present
from pgqd.web.security import (
    SESSION_COOKIE,
    Authenticator,
    CsrfTokens,
    cross_site_reason,
    loopback_host,
    safe_return_path,
)

NOTICE_COOKIE = "pgqd_notice"
# Scripts and styles come from this server only, so an injected tag could not run even if escaping failed.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
}


@dataclass(frozen=True)
class WebSettings:
    dsn: str | None
    names: Names
    entrypoints: tuple[str, ...] = ()
    read_only: bool = False
    credentials: WebCredentials = field(default_factory=lambda: WebCredentials("pgqd", None, None))
    pool_size: int = 4


class WebState:
    """What the handlers share: the settings, the database, the read and write sides, templates, tokens."""

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


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    state = web_state(request)
    session = request.state.session
    notice = request.cookies.get(NOTICE_COOKIE)
    html = state.templates.get_template(template).render(
        request=request,
        path=request.url.path,
        read_only=state.settings.read_only,
        csrf_token=state.csrf.token_for(session),
        notice=unquote(notice) if notice else None,
        **context,
    )
    response = HTMLResponse(html, status_code=status_code)
    if notice:
        response.delete_cookie(NOTICE_COOKIE, path="/")
    return response


def redirect_with_notice(back: object, message: str, fallback: str) -> Response:
    """Post/redirect/get: back to the page the form was on (``back``, a local path), with a one-time notice."""
    target = safe_return_path(back if isinstance(back, str) else None, fallback)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(NOTICE_COOKIE, quote(message), max_age=60, path="/", httponly=True, samesite="strict")
    return response


def refusal(status: int, title: str, reason: str) -> PlainTextResponse:
    return PlainTextResponse(f"{status} {title}: {reason}\n", status_code=status)


class Guard(BaseHTTPMiddleware):
    """Authentication for every request; for POSTs, the cross-site checks, the form token and read-only mode."""

    async def dispatch(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        state = web_state(request)
        if not state.settings.credentials.required and not loopback_host(request.headers.get("host")):
            return refusal(403, "Forbidden", "without authentication this UI answers only to 127.0.0.1 or localhost")
        if not state.auth.allows(request.headers.get("authorization")):
            response: Response = refusal(401, "Unauthorized", "this pgqd web UI needs credentials")
            response.headers["www-authenticate"] = state.auth.challenge
            return response
        session = request.cookies.get(SESSION_COOKIE)
        new_session = session is None or len(session) < 20
        if new_session:
            session = state.csrf.new_session()
        request.state.session = session
        if request.method not in ("GET", "HEAD"):
            problem = await self._change_refused(request, state, None if new_session else session)
            if problem is not None:
                return problem
        started = time.perf_counter()
        response = await call_next(request)
        response.headers["server-timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if new_session:
            response.set_cookie(SESSION_COOKIE, str(session), path="/", httponly=True, samesite="strict")
        return response

    async def _change_refused(self, request: Request, state: WebState, session: str | None) -> Response | None:
        if request.method != "POST":
            return refusal(405, "Method Not Allowed", "changes are POST requests")
        reason = cross_site_reason(dict(request.headers), request.headers.get("host"), request.url.scheme)
        if reason is not None:
            return refusal(403, "Forbidden", f"cross-site request refused ({reason})")
        if state.settings.read_only:
            return refusal(403, "Forbidden", "this pgqd web UI is read-only")
        form = await request_form(request)
        if not state.csrf.valid(session, form.get("csrf")):
            return refusal(403, "Forbidden", "the form token is missing or stale: reload the page and try again")
        return None


async def request_form(request: Request) -> dict[str, Any]:
    """The url-encoded form of a POST, read once: single values as str, repeated ones (ids) as lists."""
    cached: dict[str, Any] | None = getattr(request.state, "form", None)
    if cached is not None:
        return cached
    body = await request.body()
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    parsed: dict[str, Any] = {}
    if kind == "application/x-www-form-urlencoded" and len(body) <= 4_000_000:
        for key, values in parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True).items():
            parsed[key] = values if key == "id" else values[-1]
    request.state.form = parsed
    return parsed


def create_app(settings: WebSettings) -> Starlette:
    from pgqd.web import actions, pages, workflow_pages

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
        *workflow_pages.routes(),
        Mount("/static", StaticFiles(packages=[("pgqd.web", "static")]), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(Guard)],
        lifespan=lifespan,
        exception_handlers={
            404: pages.unknown,
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


async def database_unavailable(request: Request, exc: Exception) -> HTMLResponse:
    """A page that needed the database while it was down (it reconnects by itself once it is back)."""
    reason = mask_dsn(str(exc)) or type(exc).__name__
    return render(
        request,
        "error.html",
        status_code=503,
        title="Database unavailable",
        message=f"PostgreSQL did not answer ({reason}). This page works again as soon as it does.",
    )


def not_found(request: Request, what: str) -> HTMLResponse:
    return render(request, "error.html", status_code=404, title="Not found", message=what)
