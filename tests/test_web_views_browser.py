"""The web UI's live job lists and pages, running jobs, history and suspects in a real headless Chromium, beside a
real daemon where one is needed. Screenshots as in test_web_browser (``PGQD_SCREENSHOTS=docs``)."""

# The Chromium fixtures are test_web_browser's, imported: the tests' parameters name them.
# ruff: noqa: F811

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgqd import Client, Entrypoint, JobSpec, PostgresBackend, Worker, WorkerSettings
from tests.support.daemon import StartDaemon, daemon_config
from tests.support.waiting import wait_until
from tests.support.web import WebServer
from tests.test_web_browser import browser, page  # noqa: F401
from tests.test_web_views import add_log_rows

pytest.importorskip("playwright.async_api")

CONFIG = daemon_config(processes=1, extra='timeout = "20s"\n')


@pytest.fixture
def web(tmp_path: Path, db_dsn: str) -> Iterator[WebServer]:
    config = tmp_path / "web.toml"
    config.write_text(CONFIG)
    server = WebServer(config, db_dsn).start()
    yield server
    server.stop()


async def run_queued(dsn: str, entrypoint: str) -> None:
    backend = await PostgresBackend.open(dsn)
    try:

        async def done(_job: Any) -> None:
            return None

        await Worker(backend, [Entrypoint(entrypoint, done)], WorkerSettings(poll_interval=0.2)).run(drain=True)
    finally:
        await backend.close()


async def test_the_job_list_and_a_job_page_follow_their_jobs_without_a_reload(
    page: Any, web: WebServer, conn: Any, db_dsn: str
) -> None:
    client = Client(conn)
    first = await client.enqueue("sleeper", {"n": 1})
    await page.goto(web.url + "/jobs")
    await page.locator(f'#jobs a[href="/jobs/{first}"]').wait_for()
    second = await client.enqueue("sleeper", {"n": 2})
    await page.locator(f'#jobs a[href="/jobs/{second}"]').wait_for(timeout=10_000)

    await page.goto(f"{web.url}/jobs/{second}")
    assert await page.locator("h1 .badge").inner_text() == "queued"
    await run_queued(db_dsn, "sleeper")
    await page.locator("h1 .badge.s-successful").wait_for(timeout=10_000)
    assert await page.locator("#job-live[data-live]").count() == 0  # a finished job changes no more


async def test_the_running_view_shows_the_worker_and_the_time_run_so_far(
    page: Any, web: WebServer, db: Any, start_daemon: StartDaemon
) -> None:
    start_daemon(CONFIG).wait_ready()
    job_id = await Client(db).enqueue("sleeper", "30")
    started = "SELECT pid FROM test_runs WHERE job_id = $1"
    pid = await wait_until(lambda: db.fetchval(started, job_id), timeout=20, what="the job to start")
    await page.goto(web.url + "/running")
    row = page.locator(f'tr[data-job="{job_id}"]')
    await row.wait_for()
    assert (await row.locator('[data-col="worker"]').inner_text()).endswith(f":{pid}")
    before = await row.locator('[data-col="running-for"]').inner_text()

    async def moved_on() -> bool:
        return await row.locator('[data-col="running-for"]').inner_text() != before

    await wait_until(moved_on, timeout=10, what="the running time to go up without a reload")
    assert await row.get_attribute("class") is None  # within its 20 s timeout, no history to compare with


async def test_history_charts_and_the_range_picker(page: Any, web: WebServer, conn: Any, tmp_path: Path) -> None:
    folder = Path(os.environ["PGQD_SCREENSHOTS"]) if os.environ.get("PGQD_SCREENSHOTS") else tmp_path
    for minutes in range(60):
        await add_log_rows(conn, "send_email", f"{minutes} minutes", 30 + minutes, wait=0.02 + minutes / 200, run=0.3)
        await add_log_rows(conn, "resize_image", f"{minutes} minutes", 10, wait=0.5, run=2.5 + minutes / 20)
        await add_log_rows(conn, "send_email", f"{minutes} minutes", minutes % 7, 0.1, 4.0, status="exception")
    await page.goto(web.url + "/history")
    assert await page.locator("svg polyline").count() >= 6
    assert await page.locator('#entrypoint-history tr[data-entrypoint="send_email"]').count() == 1
    await page.screenshot(path=str(folder / "web-history.png"), full_page=True)
    await page.select_option('select[name="range"]', "7d")
    await page.get_by_role("button", name="Show").click()
    await page.wait_for_url("**/history?range=7d*")
    assert "last 7 days" in await page.locator('select[name="range"] option:checked').inner_text()


async def test_suspects_appear_on_the_overview_as_they_happen(page: Any, web: WebServer, conn: Any) -> None:
    ids = await Client(conn).enqueue_many([JobSpec("sleeper", str(n)) for n in range(4)])
    await page.goto(web.url + "/")
    row = page.locator('tr[data-entrypoint="sleeper"]')
    assert await row.locator('[data-col="suspects"]').inner_text() == "0"
    await conn.execute("UPDATE pgqd_jobs SET status = 'suspect' WHERE id = ANY($1::bigint[])", ids[:2])
    await row.locator('[data-col="suspects"] a').wait_for(timeout=10_000)
    assert await row.locator('[data-col="suspects"]').inner_text() == "2"
    await row.locator('[data-col="suspects"] a').click()
    await page.wait_for_url("**/jobs?status=suspect*")
    assert sorted(int(t) for t in await page.locator("#jobs tbody td a").all_inner_texts()) == ids[:2]
