"""The request guard: authentication for every request; for POSTs, the cross-site checks, the form token and
read-only mode; the security headers on what passes."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import Response

from pgqd.web.forms import request_form
from pgqd.web.rendering import refusal
from pgqd.web.security import SESSION_COOKIE, cross_site_reason, loopback_host
from pgqd.web.state import WebState, web_state

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


class Guard(BaseHTTPMiddleware):
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
