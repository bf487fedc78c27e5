"""Answers: a page from a template, a redirect with a one-time notice, a plain refusal, the error pages."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from pgqd.dsn import mask_dsn
from pgqd.errors import ReadOnlyDatabase
from pgqd.web.security import safe_return_path
from pgqd.web.state import web_state

NOTICE_COOKIE = "pgqd_notice"


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


async def database_read_only(request: Request, _exc: Exception) -> HTMLResponse:
    """A change sent to a standby (the DSN names one, or a failover is not over yet)."""
    return render(
        request,
        "error.html",
        status_code=503,
        title="Database read-only",
        message=f"PostgreSQL refused the change: {ReadOnlyDatabase.HINT}. Or serve this UI with --read-only.",
    )


async def bad_request(request: Request, exc: Exception) -> HTMLResponse:
    """A parameter or form field that cannot be used: the message says which and why."""
    return render(request, "error.html", status_code=400, title="Bad request", message=str(exc))


def not_found(request: Request, what: str) -> HTMLResponse:
    return render(request, "error.html", status_code=404, title="Not found", message=what)


async def unknown(request: Request, _exc: Exception) -> HTMLResponse:
    """Any path without a page."""
    return not_found(request, "There is no such page.")
