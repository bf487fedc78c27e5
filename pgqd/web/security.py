"""Who may use the web UI, and which requests may change anything.

- Loopback by default: only 127.0.0.1, ::1 and localhost count as safe without authentication. Every other
  address, 0.0.0.0 and the rest of 127.0.0.0/8 included, needs a password or a token to start at all.
- Authentication, once configured, applies to every request on every address: HTTP basic with the password,
  or ``Authorization: Bearer`` with the token.
- Without authentication, only requests whose Host header names the loopback are answered (a defence against
  DNS rebinding).
- Changes are POSTs only, and a POST must come from a page of this server: a browser's ``Sec-Fetch-Site`` and
  ``Origin`` must say same-origin, and the form must carry the token derived from this browser's session
  cookie (a SameSite=Strict cookie, which a cross-site request does not even send).
- Wrong credentials are counted per client address: past a few in a minute, that address gets 429 until the
  minute is over, so passwords cannot be guessed at the speed of the network.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections import deque
from dataclasses import dataclass

from pgqd.config.load import WebCredentials
from pgqd.errors import ConfigError

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
SESSION_COOKIE = "pgqd_session"


def split_listen(listen: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` as (host, port)."""
    host, _, port_text = listen.rpartition(":")
    host = host.strip("[]")
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not host or not 0 < port < 65536:
        raise ConfigError(f'--listen {listen!r}: use "host:port", e.g. "127.0.0.1:9465"')
    return host, port


def check_bind(host: str, credentials: WebCredentials) -> None:
    """Refuses an address beyond loopback unless a password or a token protects it."""
    if host not in LOOPBACK_HOSTS and not credentials.required:
        raise ConfigError(
            f"refusing to serve the web UI on {host} without authentication: set [web] password or token "
            "(or password_file, token_file, $PGQD_WEB_PASSWORD, $PGQD_WEB_TOKEN), or listen on 127.0.0.1"
        )


@dataclass(frozen=True)
class Authenticator:
    credentials: WebCredentials

    def allows(self, authorization: str | None) -> bool:
        if not self.credentials.required:
            return True
        if not authorization:
            return False
        scheme, _, value = authorization.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and self.credentials.token is not None:
            return _same(value.strip(), self.credentials.token)
        if scheme == "basic" and self.credentials.password is not None:
            try:
                user, _, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            # Both compared, always, so the time taken does not tell which one was wrong.
            same_user = _same(user, self.credentials.username)
            return _same(password, self.credentials.password) and same_user
        return False

    def who(self, authorization: str | None) -> str:
        """Who an allowed request is, as the action log names them."""
        if not self.credentials.required or not authorization:
            return "anonymous"
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer":
            return "token holder"
        try:
            return base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            return "unknown"

    @property
    def challenge(self) -> str:
        if self.credentials.password is not None:
            return 'Basic realm="pgqd", charset="UTF-8"'
        return 'Bearer realm="pgqd"'


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


class LoginThrottle:
    """Failed logins per client address in a sliding window; an address past the limit waits out the window."""

    # Addresses remembered at most; beyond it the oldest are forgotten (a flood of addresses cannot fill memory).
    MAX_ADDRESSES = 10_000

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, address: str, now: float | None = None) -> float | None:
        """Seconds until ``address`` may try again, or None if it may now."""
        failures = self._failures.get(address)
        if not failures:
            return None
        now = time.monotonic() if now is None else now
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if len(failures) < self.limit:
            return None
        return failures[0] + self.window - now

    def failed(self, address: str, now: float | None = None) -> None:
        if address not in self._failures and len(self._failures) >= self.MAX_ADDRESSES:
            del self._failures[next(iter(self._failures))]
        self._failures.setdefault(address, deque()).append(time.monotonic() if now is None else now)

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)


class CsrfTokens:
    """Form tokens bound to a browser session: an HMAC of the session cookie under a key of this process."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    @staticmethod
    def new_session() -> str:
        return secrets.token_urlsafe(32)

    def token_for(self, session: str) -> str:
        return hmac.new(self._key, session.encode("utf-8"), hashlib.sha256).hexdigest()

    def valid(self, session: str | None, token: str | None) -> bool:
        if not session or not token:
            return False
        return hmac.compare_digest(self.token_for(session), token)


def cross_site_reason(headers: dict[str, str], host: str | None, scheme: str) -> str | None:
    """Why a POST is not from a page of this server, judged by the headers browsers set; None if it may be."""
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return f"Sec-Fetch-Site is {fetch_site}"
    origin = headers.get("origin")
    if origin is not None and (host is None or origin != f"{scheme}://{host}"):
        return f"Origin {origin} is not this server"
    return None


def loopback_host(host_header: str | None) -> bool:
    """Whether a Host header names this machine's loopback. Without authentication only such requests are
    served: a page on another site whose name was made to resolve to 127.0.0.1 (DNS rebinding) would
    otherwise be same-origin with the UI and could read and post its forms."""
    if not host_header:
        return False
    host = host_header.rsplit(":", 1)[0] if not host_header.endswith("]") else host_header
    return host.strip("[]").lower() in LOOPBACK_HOSTS


def safe_return_path(path: str | None, fallback: str = "/") -> str:
    """A local path to send the browser back to after a change; anything else becomes ``fallback``."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return fallback
    return path
