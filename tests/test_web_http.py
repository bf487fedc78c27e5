"""The web UI over plain HTTP against the real ``pgqd web`` server: who may change what, and what a page shows."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import pytest

from pgqd import Client, Entrypoint, JobSpec, PostgresBackend, RetryPolicy, Worker, WorkerSettings
from pgqd.models import ScheduleDefinition, ScheduleSpec
from pgqd.ops.browse import SEARCH_WINDOW
from tests.support.cli import run_pgqd
from tests.support.daemon import daemon_config, free_port
from tests.support.waiting import wait_until
from tests.support.web import FORM, Browser, WebServer, notice_of


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "queue.toml"
    path.write_text(daemon_config())
    return path


@pytest.fixture
def web(config_path: Path, db_dsn: str) -> Iterator[WebServer]:
    server = WebServer(config_path, db_dsn).start()
    yield server
    server.stop()


def cancel_form(job_id: int, token: str | None) -> bytes:
    fields = {"action": "cancel", "id": str(job_id), "back": "/jobs"}
    if token is not None:
        fields["csrf"] = token
    return urlencode(fields).encode()


async def test_a_cross_site_post_is_refused_and_changes_nothing(web: WebServer, conn: Any) -> None:
    client = Client(conn)
    job_id = await client.enqueue("sleeper", "1")
    session, token = web.session()
    cookie = {"cookie": f"pgqd_session={session}"}

    # A page elsewhere posting to this server: the browser marks it cross-site and names its origin.
    forged = web.request(
        "POST",
        "/jobs/action",
        cancel_form(job_id, token),
        {**FORM, **cookie, "origin": "http://evil.example", "sec-fetch-site": "cross-site"},
    )
    assert forged.status == 403
    assert "cross-site" in forged.text
    # An older browser without Sec-Fetch-Site still sends Origin.
    other_origin = web.request(
        "POST", "/jobs/action", cancel_form(job_id, token), {**FORM, **cookie, "origin": "http://evil.example"}
    )
    assert other_origin.status == 403
    # Without the form token (what a forged form cannot know) it is refused as well.
    tokenless = web.request("POST", "/jobs/action", cancel_form(job_id, None), {**FORM, **cookie})
    assert tokenless.status == 403
    wrong = web.request("POST", "/jobs/action", cancel_form(job_id, "0" * 64), {**FORM, **cookie})
    assert wrong.status == 403
    assert (await client.status([job_id]))[job_id].status == "queued"

    same_site = web.request(
        "POST",
        "/jobs/action",
        cancel_form(job_id, token),
        {**FORM, **cookie, "origin": web.url, "sec-fetch-site": "same-origin"},
    )
    assert same_site.status == 303, same_site.text
    assert same_site.headers["location"] == "/jobs"
    assert (await client.status([job_id]))[job_id].status == "canceled"


async def test_read_only_mode_shows_no_controls_and_refuses_changes(config_path: Path, db_dsn: str, conn: Any) -> None:
    client = Client(conn)
    job_id = await client.enqueue("sleeper", "1")
    server = WebServer(config_path, db_dsn, args=["--read-only"]).start()
    try:
        page = server.get("/jobs")
        assert page.status == 200
        assert "read-only" in page.text
        assert 'value="cancel"' not in page.text
        session, token = server.session()
        refused = server.request(
            "POST", "/jobs/action", cancel_form(job_id, token), {**FORM, "cookie": f"pgqd_session={session}"}
        )
        assert refused.status == 403
        assert "read-only" in refused.text
        paused = server.request(
            "POST",
            "/entrypoints/pause",
            urlencode({"entrypoint": "sleeper", "csrf": token}).encode(),
            {**FORM, "cookie": f"pgqd_session={session}"},
        )
        assert paused.status == 403
    finally:
        server.stop()
    assert (await client.status([job_id]))[job_id].status == "queued"
    assert not (await client.paused()).is_paused("sleeper")


async def test_unknown_job_ids_and_pages_are_404(web: WebServer, conn: Any) -> None:
    job_id = await Client(conn).enqueue("sleeper", "1")
    assert web.get(f"/jobs/{job_id}").status == 200
    missing = web.get(f"/jobs/{job_id + 1000}")
    assert missing.status == 404
    assert f"There is no job {job_id + 1000}" in missing.text
    assert web.get("/jobs/not-a-number").status == 404
    assert web.get("/jobs/99999999999999999999").status == 404
    unknown_page = web.get("/no-such-page")
    assert unknown_page.status == 404
    assert "There is no such page." in unknown_page.text


async def test_bad_filters_get_a_400_that_names_the_parameter(web: WebServer) -> None:
    bad_status = web.get("/jobs?status=exploded")
    assert bad_status.status == 400
    assert "unknown status &#39;exploded&#39;" in bad_status.text
    bad_time = web.get("/jobs?from=yesterday")
    assert bad_time.status == 400
    assert "from: &#39;yesterday&#39; is not a date and time" in bad_time.text


async def test_payloads_headers_and_errors_are_escaped(web: WebServer, conn: Any) -> None:
    hostile = '<script>alert("pwned")</script>'
    job_id = await Client(conn).enqueue("sleeper", hostile, headers={"x-note": "<img src=x onerror=alert(1)>"})
    page = web.get(f"/jobs/{job_id}")
    assert page.status == 200
    assert "<script>alert" not in page.text
    assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in page.text
    assert "<img src=x" not in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    listing = web.get("/jobs?q=pwned")
    assert str(job_id) in listing.text
    assert "<script>alert" not in listing.text


def test_a_non_loopback_address_needs_credentials_to_start(config_path: Path, db_dsn: str) -> None:
    port = free_port()
    refused = run_pgqd(
        "web", "--config", str(config_path), "--listen", f"0.0.0.0:{port}", env={"PGQD_DSN": db_dsn}, timeout=30
    )
    assert refused.returncode == 2
    assert "refusing to serve the web UI on 0.0.0.0 without authentication" in refused.stderr
    garbled = run_pgqd("web", "--config", str(config_path), "--listen", "9465", env={"PGQD_DSN": db_dsn})
    assert garbled.returncode == 2
    assert "--listen '9465': use \"host:port\"" in garbled.stderr


def test_basic_and_bearer_credentials_are_checked_on_every_request(config_path: Path, db_dsn: str) -> None:
    env = {"PGQD_WEB_PASSWORD": "correct horse", "PGQD_WEB_TOKEN": "t0ken-for-scripts"}
    server = WebServer(config_path, db_dsn, env=env, host="0.0.0.0").start()
    try:
        anonymous = server.get("/")
        assert anonymous.headers["www-authenticate"].startswith("Basic")
        assert server.get("/static/style.css").status == 401

        def basic(user: str, password: str) -> dict[str, str]:
            return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

        assert server.get("/", basic("pgqd", "correct horse")).status == 200
        assert server.get("/", basic("pgqd", "wrong")).status == 401
        assert server.get("/", basic("admin", "correct horse")).status == 401
        assert server.get("/workers", {"authorization": "Bearer t0ken-for-scripts"}).status == 200
        assert server.get("/workers", {"authorization": "Bearer nope"}).status == 401
    finally:
        server.stop()


def test_without_the_web_extra_the_command_names_it(tmp_path: Path, config_path: Path) -> None:
    # A stand-in package that fails to import, as a missing one does.
    fake = tmp_path / "site" / "starlette"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'starlette'\")\n")
    result = run_pgqd("web", "--config", str(config_path), env={"PYTHONPATH": str(tmp_path / "site")})
    assert result.returncode == 2
    assert "pip install 'pgqd[web]'" in result.stderr
    assert "starlette" in result.stderr


async def test_bulk_actions_on_everything_matching_a_filter(web: WebServer, conn: Any) -> None:
    client = Client(conn)
    timeouts = await client.enqueue_many([JobSpec("sleeper", {"say": "timeout soon"}) for _ in range(1500)])
    others = await client.enqueue_many([JobSpec("sleeper", {"say": "fine"}) for _ in range(3)])
    later = await client.enqueue("sleeper", "timeout later", execute_after=timedelta(hours=1))
    browser = Browser(web)

    matching = {"action": "cancel", "scope": "matching", "status": "queued", "q": "timeout", "back": "/jobs"}
    # First the exact count, and nothing changed yet.
    asked = browser.post("/jobs/action", matching)
    assert asked.status == 200
    assert 'data-count="1500"' in asked.text
    assert "Cancel 1,500 job(s)" in asked.text
    assert {s.status for s in (await client.status(timeouts)).values()} == {"queued"}

    done = browser.post("/jobs/action", {**matching, "confirmed": "1500"})
    assert done.status == 303
    assert "Canceled 1,500 matching job(s) (1500 counted at confirmation)" in notice_of(done)
    states = await client.status([*timeouts, *others, later])
    assert {states[i].status for i in timeouts} == {"canceled"}
    assert {states[i].status for i in others} == {"queued"}
    assert states[later].status == "deferred"

    retried = browser.post("/jobs/action", {"action": "retry", "id": [str(later), str(others[0])], "back": "/"})
    assert retried.status == 303
    states = await client.status([later, others[0]])
    assert states[later].status == "queued"
    assert states[others[0]].status == "queued"

    deleted = browser.post("/jobs/action", {"action": "delete", "id": [str(i) for i in others], "back": "/jobs"})
    assert deleted.status == 303
    assert {s.status for s in (await client.status(others)).values()} == {"deleted"}


async def test_schedules_can_be_run_now_disabled_and_enabled(web: WebServer, conn: Any) -> None:
    backend = PostgresBackend(conn)
    spec = ScheduleSpec("digest", "0 3 * * *", "sleeper", payload=b"from the schedule")
    await backend.sync_schedules([ScheduleDefinition(spec, datetime.now(UTC) + timedelta(days=1))])
    browser = Browser(web)
    assert "digest" in web.get("/schedules").text

    ran = browser.post("/schedules/digest/run", {"back": "/schedules"})
    assert ran.status == 303
    job = await conn.fetchrow("SELECT payload, headers FROM pgqd_jobs WHERE entrypoint = 'sleeper'")
    assert job["payload"] == b"from the schedule"
    assert json.loads(job["headers"]) == {"pgqd-schedule": "digest", "pgqd-schedule-run": "manual"}

    assert browser.post("/schedules/digest/disable", {}).status == 303
    assert not (await backend.schedule_states())[0].enabled
    assert browser.post("/schedules/digest/enable", {}).status == 303
    assert (await backend.schedule_states())[0].enabled
    assert browser.post("/schedules/nope/run", {}).status == 404


async def fail_with_attempt(job: Any) -> None:
    raise ValueError(f"failure number {job.attempts}")


async def test_a_job_shows_the_error_of_every_attempt(web: WebServer, conn: Any, db_dsn: str) -> None:
    client = Client(conn)
    job_id = await client.enqueue("retried", "x")
    backend = await PostgresBackend.open(db_dsn)
    try:
        policy = RetryPolicy(max_attempts=3, initial=0.05, jitter=False)
        entry = Entrypoint("retried", fail_with_attempt, on_failure="hold", retry=policy)

        async def held() -> bool:
            # A drain returns while the retry waits out its backoff; run again until the job is held.
            await asyncio.wait_for(Worker(backend, [entry], WorkerSettings(poll_interval=0.1)).run(drain=True), 30)
            return (await client.status([job_id]))[job_id].status == "failed"

        await wait_until(held, timeout=30, what="the job to be held after its third failure", interval=0.1)
    finally:
        await backend.close()
    held = web.get(f"/jobs/{job_id}").text
    newest_first = [held.index(f"failure number {n}") for n in (3, 2, 1)]
    assert newest_first == sorted(newest_first)
    assert "attempt 1" in held
    assert "attempt 3" in held

    await client.cancel([job_id])
    finished = web.get(f"/jobs/{job_id}").text
    assert "Final error" in finished
    assert "Earlier errors" in finished
    # The final error is shown once, on its own; the earlier list holds the attempts before it.
    assert "attempt 3" not in finished
    assert "attempt 2" in finished
    assert "failure number 1" in finished


async def test_a_finished_job_shows_its_payload_when_its_entrypoint_keeps_payloads(
    web: WebServer, conn: Any, db_dsn: str
) -> None:
    client = Client(conn)
    kept_id, forgotten_id = await client.enqueue_many(
        [JobSpec("kept", {"to": "ada@example.com"}), JobSpec("forgotten", "not kept")]
    )
    backend = await PostgresBackend.open(db_dsn)
    try:
        entries = [Entrypoint("kept", fail_with_attempt, keep_payload=True), Entrypoint("forgotten", fail_with_attempt)]
        await asyncio.wait_for(Worker(backend, entries, WorkerSettings(poll_interval=0.1)).run(drain=True), 30)
    finally:
        await backend.close()
    kept = web.get(f"/jobs/{kept_id}").text
    assert "Final error" in kept
    assert "ada@example.com" in kept
    forgotten = web.get(f"/jobs/{forgotten_id}").text
    assert "Final error" in forgotten
    assert "not kept" not in forgotten
    assert "kept no payload" in forgotten


def test_without_credentials_only_loopback_host_names_are_answered(web: WebServer) -> None:
    assert web.get("/", {"host": f"localhost:{web.port}"}).status == 200
    # A site whose name was made to resolve to 127.0.0.1 (DNS rebinding) must not get a same-origin page.
    rebound = web.get("/", {"host": f"attacker.example:{web.port}"})
    assert rebound.status == 403
    assert "127.0.0.1 or localhost" in rebound.text


async def test_payloads_show_as_json_text_or_a_hex_dump(web: WebServer, conn: Any) -> None:
    client = Client(conn)
    as_json, as_text, as_bytes = await client.enqueue_many(
        [
            JobSpec("sleeper", {"b": 1, "a": [1, 2]}),
            JobSpec("sleeper", "plain words, not JSON"),
            JobSpec("sleeper", b"\x00\x01\xffPNG\r\n"),
        ]
    )
    pretty = web.get(f"/jobs/{as_json}").text
    assert "<small>json, " in pretty
    assert "&#34;a&#34;: [\n    1,\n    2\n  ]" in pretty
    assert "plain words, not JSON" in web.get(f"/jobs/{as_text}").text
    binary = web.get(f"/jobs/{as_bytes}").text
    assert "binary, 8 bytes" in binary
    assert "00000000  00 01 ff 50 4e 47 0d 0a" in binary


async def test_a_search_past_its_read_window_goes_on_from_where_it_stopped(web: WebServer, conn: Any) -> None:
    oldest = await Client(conn).enqueue("sleeper", "the-oldest-needle")
    await conn.execute(
        "INSERT INTO pgqd_jobs (entrypoint, payload) SELECT 'sleeper', 'hay' FROM generate_series(1, $1)",
        SEARCH_WINDOW + 10,
    )
    first = web.get("/jobs?q=oldest-needle")
    assert first.status == 200
    assert f"/jobs/{oldest}" not in first.text
    older = re.search(r'href="(/jobs\?q=oldest-needle&amp;before=\d+)"', first.text)
    assert older, first.text
    second = web.get(older[1].replace("&amp;", "&"))
    assert f'href="/jobs/{oldest}"' in second.text

    newest = web.get("/jobs?limit=25")
    ids = [int(i) for i in re.findall(r'href="/jobs/(\d+)"', newest.text)]
    assert len(ids) == 25
    assert ids == sorted(ids, reverse=True)
    following = re.search(r'href="(/jobs\?limit=25&amp;before=(\d+))"', newest.text)
    assert following
    assert int(following[2]) == ids[-1]
    page_two = [int(i) for i in re.findall(r'href="/jobs/(\d+)"', web.get(following[1].replace("&amp;", "&")).text)]
    assert page_two[0] == ids[-1] - 1


def test_an_unreachable_or_uninstalled_database_stops_the_start_with_a_clear_error(
    config_path: Path, empty_dsn: str
) -> None:
    down = run_pgqd("web", "--config", str(config_path), env={"PGQD_DSN": "postgresql://postgres@127.0.0.1:1/x"})
    assert down.returncode == 1
    assert "could not connect to postgresql://postgres@127.0.0.1:1/x" in down.stderr
    bare = run_pgqd("web", "--config", str(config_path), env={"PGQD_DSN": empty_dsn})
    assert bare.returncode == 1
    assert "run `pgqd install`" in bare.stderr


async def test_pages_survive_lost_connections_and_say_503_while_the_database_is_gone(
    web: WebServer, conn: Any, pg_server: str
) -> None:
    assert web.get("/").status == 200
    killed = await conn.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'pgqd-web'"
    )
    assert killed >= 1
    # A request on a connection that was cut may fail once, as "unavailable"; the pool then reconnects.
    statuses = [web.get("/").status for _ in range(4)]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[-2:] == [200, 200], statuses

    database = await conn.fetchval("SELECT current_database()")
    await conn.close()
    admin = await asyncpg.connect(pg_server)
    try:
        await admin.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
    finally:
        await admin.close()
    gone = web.get("/workers")
    assert gone.status == 503
    assert "Database unavailable" in gone.text
