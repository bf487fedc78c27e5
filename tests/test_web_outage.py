"""The web UI while PostgreSQL does not answer (TCP open, no reply): pages answer 503 within the database bounds
instead of hanging, and work again by themselves once it answers; in a browser, the overview says its figures
are stale while it cannot refresh them, and stops saying so once fresh ones arrive."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import daemon_config, wait_for
from tests.support.tcp_proxy import TcpProxy
from tests.support.web import CHROMIUM_ARGS, Reply, WebServer, require_chromium

# worker_timeout 10s: the command timeout is derived from it as 2.5 s, as in the daemon.
CONFIG = daemon_config(worker_timeout="10s")


@pytest.fixture
def proxy(db_dsn: str) -> Iterator[TcpProxy]:
    with TcpProxy.for_dsn(db_dsn) as running:
        yield running


@pytest.fixture
def web(tmp_path: Path, db_dsn: str, proxy: TcpProxy) -> Iterator[WebServer]:
    config = tmp_path / "queue.toml"
    config.write_text(CONFIG)
    server = WebServer(config, proxy.route(db_dsn)).start()
    yield server
    server.stop()


def timed_get(web: WebServer, path: str) -> tuple[float, Reply]:
    started = time.monotonic()
    reply = web.get(path)
    return time.monotonic() - started, reply


def test_pages_answer_503_while_the_database_hangs_and_recover_by_themselves(web: WebServer, proxy: TcpProxy) -> None:
    assert web.get("/workers").status == 200
    proxy.freeze()
    # More requests at once than the pool has connections: none may wait behind another's hung call.
    paths = ["/workers", "/", "/jobs", "/jobs/1", "/failures", "/schedules", "/live/overview", "/actions"]
    with ThreadPoolExecutor(len(paths)) as pool:
        answers = list(pool.map(lambda p: timed_get(web, p), paths))
    # web.get gives up after 10 s: every page answered within that bound, and said why.
    for path, (took, reply) in zip(paths, answers, strict=True):
        assert reply.status == 503, (path, took, reply.status, reply.text[:300])
        assert "Database unavailable" in reply.text
        assert reply.headers.get("cache-control") == "no-store"
    print("503 after (s):", {p: round(t, 2) for p, (t, _) in zip(paths, answers, strict=True)})

    proxy.thaw()
    wait_for(lambda: web.get("/workers").status == 200, 30, "the pages to work again after the database answers")
    assert all(web.get(p).status == 200 for p in ("/", "/jobs", "/failures"))


@pytest.fixture(scope="module")
async def browser() -> Any:
    playwright_api = pytest.importorskip("playwright.async_api")
    executable = require_chromium()
    async with playwright_api.async_playwright() as driver:
        chromium = await driver.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


async def test_the_overview_shows_a_banner_while_its_data_is_stale_and_clears_it(
    web: WebServer, proxy: TcpProxy, browser: Any
) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    page.set_default_timeout(30_000)
    try:
        await page.goto(web.url + "/")
        banner = page.locator("#stale-banner")
        assert await banner.is_hidden()
        proxy.freeze()
        await banner.wait_for(state="visible")
        text = await banner.inner_text()
        assert "Database unreachable" in text
        assert "not updating" in text
        assert await page.locator("[data-live][data-stale]").count() == 1

        proxy.thaw()
        await banner.wait_for(state="hidden")
        assert await page.locator("[data-live][data-stale]").count() == 0
        assert await page.locator("#queues").count() == 1
    finally:
        proxy.thaw()
        await context.close()
