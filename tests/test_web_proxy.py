"""The web UI behind a TLS reverse proxy on another address (Debian's nginx, a certificate made at test time),
in headless Chromium: with the proxy trusted ([web] trusted_proxies), actions pass the Origin check through it
and cookies are Secure; with it not trusted, its X-Forwarded-* headers are ignored and actions are refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pgqd import Client
from tests.support.daemon import daemon_config
from tests.support.reverse_proxy import TlsProxy, require_nginx
from tests.support.web import CHROMIUM_ARGS, WebServer, require_chromium

playwright_api = pytest.importorskip("playwright.async_api")

# The UI on 127.0.0.2, the proxy connecting from 127.0.0.3: three addresses, as three hosts would have.
UI_HOST = "127.0.0.2"
PROXY_SOURCE = "127.0.0.3"


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    executable = require_chromium()
    async with playwright_api.async_playwright() as driver:
        chromium = await driver.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


async def cancel_through(proxy: TlsProxy, browser: Any, job_id: int) -> tuple[str, list[dict[str, Any]]]:
    """Ticks the job on the jobs page behind the proxy, cancels it, and returns what the browser then shows."""
    context = await browser.new_context(
        ignore_https_errors=True, http_credentials={"username": "pgqd", "password": "s3cret"}
    )
    page = await context.new_page()
    page.set_default_timeout(15_000)
    page.on("dialog", lambda dialog: dialog.accept())
    try:
        await page.goto(proxy.url + "/jobs")
        await page.locator(f'input[name="id"][value="{job_id}"]').check()
        await page.get_by_role("button", name="Cancel").click()
        await page.wait_for_load_state()
        return await page.locator("body").inner_text(), await context.cookies()
    finally:
        await context.close()


@pytest.mark.parametrize("trusted", [True, False], ids=["trusted", "not-trusted"])
async def test_actions_work_through_a_trusted_tls_proxy_with_secure_cookies(
    tmp_path: Path, db_dsn: str, conn: Any, browser: Any, trusted: bool
) -> None:
    require_nginx()
    proxies = f'["{PROXY_SOURCE}"]' if trusted else "[]"
    config = tmp_path / "web.toml"
    config.write_text(daemon_config() + f'\n[web]\npassword = "s3cret"\ntrusted_proxies = {proxies}\n')
    web = WebServer(config, db_dsn, host=UI_HOST).start()
    proxy = TlsProxy(tmp_path / "nginx", f"{UI_HOST}:{web.port}", PROXY_SOURCE).start()
    try:
        job_id = await Client(conn).enqueue("sleeper", "through the proxy")
        shown, cookies = await cancel_through(proxy, browser, job_id)
        status = (await Client(conn).status([job_id]))[job_id].status
        if trusted:
            assert "Canceled 1 of 1 selected job(s)" in shown
            assert status == "canceled"
            session = next(c for c in cookies if c["name"] == "pgqd_session")
            assert session["secure"]
            actor = await conn.fetchval("SELECT actor FROM pgqd_action_log")
            # The browser's address as the proxy saw it, not the proxy's own.
            assert actor == "pgqd from 127.0.0.1"
        else:
            assert "cross-site request refused (Origin https://127.0.0.1:" in shown
            assert status == "queued"
    finally:
        proxy.stop()
        web.stop()
