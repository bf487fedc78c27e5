"""The web UI in a real headless Chromium, beside a real daemon: what an operator sees and does.

Needs Debian's chromium (scripts/install-test-tools.sh); without it these tests skip locally and fail in CI.
The screenshots in docs/ come from here: `PGQD_SCREENSHOTS=docs scripts/test -k screenshots` writes them there
(otherwise they go to the test's temporary folder, so a test run leaves the checkout as it was).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pgqd import Client, Entrypoint, JobSpec, PostgresBackend, RetryPolicy, Worker, WorkerSettings
from tests.support.daemon import StartDaemon, daemon_config
from tests.support.waiting import wait_until
from tests.support.web import CHROMIUM_ARGS, WebServer, require_chromium

playwright_api = pytest.importorskip("playwright.async_api")

TWO_ENTRYPOINTS = daemon_config(
    processes=1, extra='\n[entrypoints.other]\nhandler = "tests.support.daemon_app:other"\n'
)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    executable = require_chromium()
    async with playwright_api.async_playwright() as driver:
        chromium = await driver.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    context = await browser.new_context(viewport={"width": 1280, "height": 820})
    opened = await context.new_page()
    opened.set_default_timeout(15_000)
    opened.on("dialog", lambda dialog: dialog.accept())
    yield opened
    await context.close()


@pytest.fixture
def web(tmp_path: Path, db_dsn: str) -> Iterator[WebServer]:
    config = tmp_path / "web.toml"
    config.write_text(TWO_ENTRYPOINTS)
    server = WebServer(config, db_dsn).start()
    yield server
    server.stop()


TRACEBACK = """Traceback (most recent call last):
  File "/srv/shop/shop/webhooks.py", line 58, in deliver
    response = await session.post(hook.url, json=event, timeout=30)
  File "/srv/shop/shop/http.py", line 112, in post
    raise TimeoutError(f"upstream answered nothing within {timeout} s")
TimeoutError: upstream answered nothing within 30 s"""


RESET_TRACEBACK = """Traceback (most recent call last):
  File "/srv/shop/shop/webhooks.py", line 58, in deliver
    response = await session.post(hook.url, json=event, timeout=30)
ConnectionError: connection reset by peer"""


async def fail(_job: Any) -> None:
    raise TimeoutError("upstream answered nothing within 30 s")


async def hold_failures(dsn: str, entrypoint: str) -> None:
    """Runs the queued jobs of ``entrypoint`` once with a failing handler, so they end up held."""
    backend = await PostgresBackend.open(dsn)
    try:
        entry = Entrypoint(entrypoint, fail, on_failure="hold", retry=RetryPolicy(max_attempts=1))
        await Worker(backend, [entry], WorkerSettings(poll_interval=0.2)).run(drain=True)
    finally:
        await backend.close()


async def status_of(client: Client, job_id: int) -> str:
    return (await client.status([job_id]))[job_id].status


async def test_the_overview_shows_a_newly_enqueued_job_without_a_reload(page: Any, web: WebServer, conn: Any) -> None:
    await page.goto(web.url + "/")
    assert await page.locator("h1").inner_text() == "Overview"
    assert await page.locator('tr[data-entrypoint="fresh_entrypoint"]').count() == 0
    first = await Client(conn).enqueue("fresh_entrypoint", {"hello": "world"})
    row = page.locator('tr[data-entrypoint="fresh_entrypoint"]')
    await row.wait_for(timeout=10_000)
    assert (await row.locator('[data-col="queued"]').inner_text()).strip() == "1"
    assert (await row.locator('[data-col="waiting"]').inner_text()).strip() == "0"

    assert first is not None
    await Client(conn).enqueue_many([JobSpec("fresh_entrypoint", after=[first]) for _ in range(2)])
    waiting = row.locator('[data-col="waiting"] a')  # a count above zero links to those jobs
    await waiting.wait_for(timeout=10_000)
    assert (await waiting.inner_text()).strip() == "2"
    assert await waiting.get_attribute("href") == "/jobs?status=waiting&entrypoint=fresh_entrypoint"
    assert (await row.locator('[data-col="queued"]').inner_text()).strip() == "1"


async def test_pausing_from_the_page_stops_the_running_daemon_claiming_until_resumed(
    page: Any, web: WebServer, db: Any, start_daemon: StartDaemon
) -> None:
    start_daemon(TWO_ENTRYPOINTS).wait_ready()
    client = Client(db)
    await page.goto(web.url + "/")
    row = page.locator('tr[data-entrypoint="sleeper"]')
    await row.locator('button[data-action="pause"]').click()
    await page.locator(".notice").wait_for()
    assert "Paused sleeper" in await page.locator(".notice").inner_text()
    assert await row.locator('[data-col="state"]').inner_text() == "paused"

    held_back = await client.enqueue("sleeper", "0")
    # The daemon keeps claiming other work: once this job has run, it has had every chance to take the other.
    witness = await client.enqueue("other", "0")
    await wait_until(lambda: _ran(db, witness), timeout=20, what="the unpaused entrypoint's job to run")
    assert await status_of(client, held_back) == "queued"
    assert not await _ran(db, held_back)

    await row.locator('button[data-action="resume"]').click()
    await page.locator(".notice").wait_for()
    assert "Resumed sleeper" in await page.locator(".notice").inner_text()
    await wait_until(lambda: _ran(db, held_back), timeout=20, what="the resumed entrypoint's job to run")


async def _ran(db: Any, job_id: int) -> bool:
    return bool(await db.fetchval("SELECT count(*) FROM test_runs WHERE job_id = $1", job_id))


async def test_requeue_a_held_job_from_the_failures_page(page: Any, web: WebServer, conn: Any, db_dsn: str) -> None:
    client = Client(conn)
    held, other = await client.enqueue_many([JobSpec("webhook", {"n": 1}), JobSpec("webhook", {"n": 2})])
    await hold_failures(db_dsn, "webhook")
    await page.goto(web.url + "/failures")
    assert await page.locator("#held tbody tr").count() == 2
    assert "TimeoutError" in await page.locator("#held").inner_text()
    await page.locator(f'input[name="id"][value="{held}"]').check()
    await page.get_by_role("button", name="Requeue selected").click()
    await page.locator(".notice").wait_for()
    assert "Requeued 1 of 1 held job(s)" in await page.locator(".notice").inner_text()
    assert await status_of(client, held) == "queued"
    assert await status_of(client, other) == "failed"
    assert await page.locator("#held tbody tr").count() == 1


async def test_requeue_every_matching_job_confirms_the_count_then_reports_conflicts_and_logs_it(
    page: Any, web: WebServer, conn: Any
) -> None:
    client = Client(conn)
    held = await client.enqueue_many([JobSpec("webhook", {"n": n}, dedupe_key=f"hook:{n}") for n in range(30)])
    await conn.execute("UPDATE pgqd_jobs SET status = 'failed' WHERE id = ANY ($1::bigint[])", held)
    blocker = await client.enqueue("webhook", "newer", dedupe_key="hook:3")
    await page.goto(web.url + "/jobs?status=failed&limit=25")
    await page.select_option('select[name="scope"]', "matching")
    await page.get_by_role("button", name="Requeue").click()
    # The page shows 25 rows; the confirmation counts every match, and nothing has changed yet.
    await page.locator("#confirm").wait_for()
    assert await page.locator("#confirm [data-count]").inner_text() == "30"
    assert await status_of(client, held[0]) == "failed"
    await page.get_by_role("button", name="Requeue 30 job(s)").click()
    notice = await page.locator(".notice").inner_text()
    assert "Requeued 29 matching job(s) (30 counted at confirmation)" in notice
    assert f"#{held[3]} key 'hook:3' (held by #{blocker})" in notice
    assert await status_of(client, held[3]) == "failed"
    assert await status_of(client, held[4]) == "queued"

    await page.get_by_role("link", name="Actions").click()
    row = page.locator('#actions tr[data-action="requeue"]')
    assert await row.count() == 1
    assert await row.locator('[data-col="changed"]').inner_text() == "29"
    assert "anonymous from 127.0.0.1" in await row.inner_text()


async def test_find_a_job_by_text_in_its_payload(page: Any, web: WebServer, conn: Any) -> None:
    client = Client(conn)
    await client.enqueue_many([JobSpec("sleeper", {"order": n}) for n in range(30)])
    wanted = await client.enqueue("sleeper", {"order": "needle-4711", "note": "café"})
    await page.goto(web.url + "/jobs")
    await page.fill('input[name="q"]', "needle-4711")
    await page.get_by_role("button", name="Search").click()
    await page.wait_for_url("**/jobs?*q=needle-4711*")
    links = page.locator("#jobs tbody td a")
    assert await links.all_inner_texts() == [str(wanted)]
    await page.goto(web.url + "/jobs?q=caf%C3%A9")
    assert await page.locator("#jobs tbody td a").all_inner_texts() == [str(wanted)]


async def test_a_script_in_a_payload_is_shown_as_text(page: Any, web: WebServer, conn: Any) -> None:
    hostile = '<script>window.pwned = true</script><img src=x onerror="window.pwned = true">'
    job_id = await Client(conn).enqueue("sleeper", hostile)
    await page.goto(f"{web.url}/jobs/{job_id}")
    assert await page.locator("#payload").inner_text() == hostile
    assert await page.locator("#payload script, #payload img").count() == 0
    assert await page.evaluate("window.pwned") is None


async def test_credentials_are_asked_for_on_a_non_loopback_address(browser: Any, tmp_path: Path, db_dsn: str) -> None:
    config = tmp_path / "exposed.toml"
    config.write_text(TWO_ENTRYPOINTS)
    server = WebServer(config, db_dsn, env={"PGQD_WEB_PASSWORD": "s3cret"}, host="0.0.0.0").start()
    try:
        anonymous = await browser.new_context()
        stranger = await anonymous.new_page()
        answers: list[Any] = []
        stranger.on("response", lambda answer: answers.append(answer))
        # Headless Chromium has no one to type a password into the prompt, so it abandons the page.
        with pytest.raises(playwright_api.Error, match="ERR_INVALID_AUTH_CREDENTIALS"):
            await stranger.goto(server.url + "/")
        assert [a.status for a in answers] == [401]
        assert answers[0].headers["www-authenticate"].startswith("Basic")
        await anonymous.close()
        signed_in = await browser.new_context(http_credentials={"username": "pgqd", "password": "s3cret"})
        opened = await signed_in.new_page()
        response = await opened.goto(server.url + "/")
        assert response.status == 200
        assert await opened.locator("h1").inner_text() == "Overview"
        await signed_in.close()
    finally:
        server.stop()


async def test_screenshots_of_the_overview_and_a_job(
    page: Any, web: WebServer, conn: Any, db_dsn: str, tmp_path: Path
) -> None:
    """A queue with some history, photographed for the README (docs/web-overview.png, docs/web-job.png)."""
    folder = Path(os.environ["PGQD_SCREENSHOTS"]) if os.environ.get("PGQD_SCREENSHOTS") else tmp_path
    client = Client(conn)
    await client.enqueue_many([JobSpec("send_email", {"to": f"user{n}@example.com"}) for n in range(240)])
    await client.enqueue_many([JobSpec("resize_image", {"image": n}, priority=5) for n in range(35)])
    failing = await client.enqueue(
        "flaky_webhook",
        {"url": "https://hooks.example.com/orders", "order": 1042, "items": [{"sku": "A-17", "qty": 2}]},
        headers={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "source": "checkout"},
    )
    await hold_failures(db_dsn, "flaky_webhook")
    # Errors as an application's handler would leave them (this test's own file paths say nothing).
    last = {"type": "TimeoutError", "message": "upstream answered nothing within 30 s", "traceback": TRACEBACK}
    earlier = {"type": "ConnectionError", "message": "connection reset by peer", "traceback": RESET_TRACEBACK}
    now = datetime.now(UTC)
    history = [
        {**earlier, "attempt": 1, "at": (now - timedelta(seconds=171)).isoformat()},
        {**earlier, "attempt": 2, "at": (now - timedelta(seconds=168)).isoformat()},
        {**last, "attempt": 3, "at": (now - timedelta(seconds=131)).isoformat()},
    ]
    await conn.execute(
        """
        UPDATE pgqd_jobs SET attempts = 3, last_error = $2::jsonb, errors = $3::jsonb,
               created_at = now() - interval '172 seconds', execute_after = now() - interval '172 seconds'
        WHERE id = $1
        """,
        failing,
        json.dumps(last),
        json.dumps(history),
    )
    await client.pause("resize_image")
    # An hour of history in the log: a steady load with a burst of failures, as a busy queue would show.
    await conn.execute(
        """
        INSERT INTO pgqd_log (job_id, entrypoint, priority, status, attempts, created_at, started_at, finished_at)
        SELECT 10000000 + row_number() OVER (), 'send_email', 0, x.status, 1, x.at, x.at, x.at + interval '40 ms'
        FROM generate_series(0, 59) AS m,
             generate_series(1, 40 + (18 * sin(m / 7.0))::int) AS k,
             LATERAL (SELECT now() - (59 - m) * interval '1 minute' - k * interval '500 ms' AS at,
                             (CASE WHEN k % 23 = 0 OR (m BETWEEN 40 AND 43 AND k % 3 = 0) THEN 'exception'
                                   ELSE 'successful' END)::pgqd_final_status AS status) AS x
        """
    )
    await page.goto(web.url + "/")
    await page.locator('tr[data-entrypoint="send_email"]').wait_for()
    await page.screenshot(path=str(folder / "web-overview.png"), full_page=True)
    await page.goto(f"{web.url}/jobs/{failing}")
    assert "TimeoutError" in await page.locator("details.attempt").first.inner_text()
    assert json.loads(await page.locator("#payload").inner_text())["order"] == 1042
    await page.screenshot(path=str(folder / "web-job.png"), full_page=True)
