"""What stands between a request and the pages, outermost first:

- ``Forwarded``: behind a trusted reverse proxy, the client's address, the scheme and the host the browser used
  come from the proxy's ``X-Forwarded-For``/``-Proto``/``-Host``; from anyone else those headers are ignored.
- ``SecurityHeaders``: the security headers on every answer (refusals and errors included), ``no-store`` on
  every page (they show payloads), ``Secure`` on cookies over HTTPS, and a plain 500 for a bug.
- ``Guard``: authentication (with a per-address limit on failures); for POSTs, the cross-site checks, the form
  token and read-only mode.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pgqd.web.forms import request_form
from pgqd.web.rendering import refusal
from pgqd.web.security import SESSION_COOKIE, cross_site_reason, loopback_host
from pgqd.web.settings import Network
from pgqd.web.state import WebState, web_state

log = structlog.get_logger("pgqd.web")

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


# The Host header the request came with, when a trusted proxy's X-Forwarded-Host replaced it.
DIRECT_HOST = "pgqd.direct_host"


def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _last(value: str) -> str:
    """The last of a header's comma-separated values: the one the nearest proxy added."""
    return value.rsplit(",", 1)[-1].strip()


class Forwarded:
    def __init__(self, app: ASGIApp, trusted: tuple[Network, ...]) -> None:
        self.app = app
        self.trusted = trusted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] == "http" and client and _trusted(client[0], self.trusted):
            scope = dict(scope)
            headers = {bytes(k).lower(): bytes(v).decode("latin-1") for k, v in scope["headers"]}
            proto = _last(headers.get(b"x-forwarded-proto", ""))
            if proto in ("http", "https"):
                scope["scheme"] = proto
            # The address of the first hop this server does not trust (proxies may chain).
            hops = [h.strip() for h in headers.get(b"x-forwarded-for", "").split(",") if h.strip()]
            for hop in reversed(hops):
                if not _trusted(hop, self.trusted):
                    scope["client"] = (hop, 0)
                    break
            host = _last(headers.get(b"x-forwarded-host", ""))
            if host:
                # Kept for the loopback rule: a page of a rebound name can send this header itself.
                scope[DIRECT_HOST] = headers.get(b"host")
                scope["headers"] = [(k, v) for k, v in scope["headers"] if k.lower() != b"host"]
                scope["headers"].append((b"host", host.encode("latin-1")))
        await self.app(scope, receive, send)


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")
        https = scope.get("scheme") == "https"
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = dict(message)
                message["headers"] = _secured(list(message.get("headers", [])), static, https)
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            log.exception("web request failed", path=scope.get("path"), method=scope.get("method"))
            if started:
                raise
            body = b"500 Internal Server Error: this is a bug in pgqd web; the server log has the details\n"
            headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 500, "headers": _secured(headers, False, https)})
            await send({"type": "http.response.body", "body": body})


def _secured(headers: list[Any], static: bool, https: bool) -> list[Any]:
    present = {bytes(k).lower() for k, _ in headers}
    out = []
    for key, value in headers:
        if https and bytes(key).lower() == b"set-cookie" and b"secure" not in bytes(value).lower():
            value = bytes(value) + b"; Secure"
        out.append((key, value))
    for name, text in SECURITY_HEADERS.items():
        if name.encode() not in present:
            out.append((name.encode(), text.encode()))
    if not static and b"cache-control" not in present:
        out.append((b"cache-control", b"no-store"))
    return out


class Guard(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        state = web_state(request)
        direct_host = request.scope.get(DIRECT_HOST, request.headers.get("host"))
        if not state.settings.credentials.required and not loopback_host(direct_host):
            return refusal(403, "Forbidden", "without authentication this UI answers only to 127.0.0.1 or localhost")
        address = request.client.host if request.client else "unknown"
        authorization = request.headers.get("authorization")
        if state.settings.credentials.required:
            wait = state.throttle.retry_after(address)
            if wait is not None:
                response: Response = refusal(429, "Too Many Requests", "too many wrong credentials: try again later")
                response.headers["retry-after"] = str(math.ceil(wait))
                return response
            if not state.auth.allows(authorization):
                if authorization:
                    state.throttle.failed(address)
                response = refusal(401, "Unauthorized", "this pgqd web UI needs credentials")
                response.headers["www-authenticate"] = state.auth.challenge
                return response
        request.state.actor = f"{state.auth.who(authorization)} from {address}"
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
