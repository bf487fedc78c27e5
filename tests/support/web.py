"""Starting the real ``pgqd web`` server as a subprocess, talking to it over HTTP, and a headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.support.cli import PGQD
from tests.support.daemon import REPO, free_port, wait_for

CHROMIUM = "/usr/bin/chromium"
# Root in a container has no user namespace for Chromium's sandbox; nothing here may reach the network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def require_chromium() -> str:
    """Debian's Chromium, or a skip (a failure in CI, where scripts/install-test-tools.sh installs it)."""
    if shutil.which(CHROMIUM) is None:
        message = f"{CHROMIUM} is missing: run scripts/install-test-tools.sh as root (apt packages chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    text: str


@dataclass
class WebServer:
    """One ``pgqd web`` process on 127.0.0.1 (or ``host``) and a free port."""

    config_path: Path
    dsn: str
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        reachable = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{reachable}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.config_path.with_suffix(f".web{self.port}.log")

    def start(self, wait: bool = True) -> WebServer:
        command = [PGQD, "web", "--config", str(self.config_path), "--listen", f"{self.host}:{self.port}", *self.args]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=REPO,
                env={**os.environ, "PGQD_DSN": self.dsn, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait:
            wait_for(self._answers, 20, f"pgqd web on port {self.port}\n{self.log()}")
        return self

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"pgqd web exited with {self.process.returncode}:\n{self.log()}")
        try:
            self.get("/static/style.css")
        except OSError:
            return False
        return True

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)

    def request(
        self, method: str, path: str, data: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> Reply:
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=dict(headers or {}))
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(request, timeout=10) as response:
                return Reply(response.status, dict(response.headers), response.read().decode())
        except urllib.error.HTTPError as error:
            return Reply(error.code, dict(error.headers), error.read().decode())

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> Reply:
        return self.request("GET", path, headers=headers)

    def post_form(self, path: str, fields: Mapping[str, str]) -> Reply:
        """A form posted as the UI's own pages post it: with a session cookie and that session's form token."""
        session, token = self.session()
        body = urlencode({**fields, "csrf": token}).encode()
        form = {"content-type": "application/x-www-form-urlencoded", "cookie": f"pgqd_session={session}"}
        return self.request("POST", path, body, form)

    def session(self) -> tuple[str, str]:
        """A session cookie and its form token, as a browser gets them from a page."""
        page = self.get("/failures")
        cookie = re.search(r"pgqd_session=([^;]+)", page.headers.get("set-cookie", ""))
        token = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
        assert cookie, page
        assert token, page
        return cookie[1], token[1]


FORM = {"content-type": "application/x-www-form-urlencoded"}


class Browser:
    """A session as a browser holds it: the cookie, the form token, same-origin headers."""

    def __init__(self, web: WebServer) -> None:
        self.web = web
        self.session, self.token = web.session()

    def post(self, path: str, fields: Mapping[str, object], headers: Mapping[str, str] | None = None) -> Reply:
        body = urlencode({**fields, "csrf": self.token}, doseq=True).encode()
        sent = {**FORM, "cookie": f"pgqd_session={self.session}", "origin": self.web.url, **(headers or {})}
        return self.web.request("POST", path, body, sent)


def notice_of(reply: Reply) -> str:
    """The one-time notice a change answers with (a cookie the next page shows), as text."""
    found = re.search(r"pgqd_notice=([^;]+)", reply.headers.get("set-cookie", ""))
    assert found, reply
    return urllib.parse.unquote(found[1])


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None
