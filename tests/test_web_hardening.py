"""The web UI under hostile input, against the real ``pgqd web`` and a real database: every route's parameters
fuzzed with a table of nasty values (4xx with a message, never a 5xx), the headers every answer carries, the
limit on guessed passwords, names a pause refuses, and binary payloads and huge queues shown as they are."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from pgqd import Client, JobSpec, PostgresBackend
from pgqd.models import ScheduleDefinition, ScheduleSpec
from tests.support.cli import run_pgqd
from tests.support.daemon import daemon_config
from tests.support.web import FORM, Browser, Reply, WebServer, notice_of

# Values that broke pages before, and their relatives: numbers past int64, digits that are not ASCII, dates
# whose UTC offset takes them past the calendar, NUL and control characters, names the client refuses, SQL and
# markup, bytes that are not UTF-8, and sizes no form needs.
NASTY = [
    "",
    "0",
    "-1",
    "9223372036854775807",
    "9223372036854775808",
    "99999999999999999999999999999",
    "1e309",
    "NaN",
    "²",
    "١٢٣",
    "\x00",
    "a\x00b",
    "\x01\x7f",
    "\r\nSet-Cookie: x=1",
    "*",
    " ",
    "0001-01-01T00:00:00+05:00",
    "0001-01-01T00:00",
    "9999-12-31T23:59:59-05:00",
    "9999-12-31T23:59:59.999999",
    "2026-13-45T25:61",
    "2026-05-01T14:30+99:00",
    "' OR 1=1 --",
    "<script>alert(1)</script>",
    "%ff%fe",
    "\udcff",
    "//evil.example/",
    "javascript:alert(1)",
    "x" * 5_000,
    "é" * 70_000,
]

GET_ROUTES = {
    "/": [],
    "/live/overview": [],
    "/jobs": ["entrypoint", "status", "q", "key", "header", "id", "from", "until", "limit", "before"],
    "/history": ["range", "entrypoint", "status"],
    "/running": ["entrypoint"],
    "/failures": ["entrypoint", "after"],
    "/actions": ["before"],
    "/schedules": [],
    "/workers": [],
}

POST_ROUTES = {
    "/jobs/action": (
        {"action": "cancel", "scope": "selected", "id": "1", "back": "/jobs"},
        ["action", "scope", "id", "entrypoint", "status", "q", "from", "until", "confirmed", "back"],
    ),
    "/jobs/action?matching": (
        {"action": "requeue", "scope": "matching", "status": "failed", "confirmed": "1", "back": "/jobs"},
        ["action", "entrypoint", "status", "q", "from", "until", "confirmed"],
    ),
    "/failures/requeue": ({"scope": "selected", "id": "2", "back": "/failures"}, ["scope", "entrypoint", "id", "back"]),
    "/entrypoints/pause": ({"entrypoint": "sleeper", "back": "/"}, ["entrypoint", "back"]),
    "/entrypoints/resume": ({"entrypoint": "sleeper", "back": "/"}, ["entrypoint", "back"]),
    "/schedules/digest/disable": ({"back": "/schedules"}, ["back"]),
}


def encoded(value: str) -> str:
    """A value as it travels in a query or form: percent-encoded UTF-8, except the raw escapes some values are."""
    if value.startswith("%"):
        return value
    return quote(value.encode("utf-8", errors="surrogateescape"), safe="")


@pytest.fixture
def web(tmp_path: Path, db_dsn: str) -> Iterator[WebServer]:
    config = tmp_path / "queue.toml"
    config.write_text(daemon_config())
    server = WebServer(config, db_dsn).start()
    yield server
    server.stop()


async def some_jobs(conn: Any) -> None:
    client = Client(conn)
    await client.enqueue_many([JobSpec("sleeper", {"n": i}, dedupe_key=f"k{i}") for i in range(5)])
    backend = PostgresBackend(conn)
    spec = ScheduleSpec("digest", "0 3 * * *", "sleeper", payload=b"x")
    await backend.sync_schedules([ScheduleDefinition(spec, datetime.now(UTC) + timedelta(days=1))])
    await conn.execute("UPDATE pgqd_jobs SET status = 'failed' WHERE id IN (2, 3)")


async def test_every_route_answers_nasty_parameters_with_a_4xx_or_a_page_never_a_5xx(web: WebServer, conn: Any) -> None:
    await some_jobs(conn)
    browser = Browser(web)
    form_headers = {**FORM, "cookie": f"pgqd_session={browser.session}", "origin": web.url}
    requests: list[tuple[str, str, bytes | None]] = []
    # A URL has room for a few kilobytes (uvicorn closes the connection on longer request heads): the long values
    # go in forms only.
    short = [v for v in NASTY if len(encoded(v)) < 8_000]
    for path, names in GET_ROUTES.items():
        for name in names or ["unexpected"]:
            requests += [(f"GET {path} {name}={v[:30]!r}", f"{path}?{name}={encoded(v)}", None) for v in short]
    requests += [(f"GET /jobs/{v[:30]!r}", f"/jobs/{encoded(v)}", None) for v in short]
    for route, (valid, names) in POST_ROUTES.items():
        for name in names:
            for value in NASTY:
                fields = {**valid, name: value, "csrf": browser.token}
                body = "&".join(f"{k}={encoded(v)}" for k, v in fields.items()).encode()
                requests.append((f"POST {route} {name}={value[:30]!r}", route.split("?")[0], body))
        # The same field twice, where a form sends it once.
        twice = urlencode({**valid, "action": ["cancel", "delete"], "scope": ["a", "b"], "csrf": browser.token}, True)
        requests.append((f"POST {route} repeated fields", route.split("?")[0], twice.encode()))

    token = urlencode({"csrf": browser.token}).encode()
    for value in short:
        requests.append((f"POST schedule name {value[:30]!r}", f"/schedules/{encoded(value)}/run", token))
        requests.append((f"POST schedule action {value[:30]!r}", f"/schedules/digest/{encoded(value)}", token))

    def send(request: tuple[str, str, bytes | None]) -> tuple[str, Reply]:
        what, path, body = request
        if body is None:
            return what, web.get(path)
        return what, web.request("POST", path, body, form_headers)

    failures: list[str] = []
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(send, requests))
    for what, reply in replies:
        if reply.status >= 500:
            failures.append(f"{what}: {reply.status} {reply.text[:200]!r}")
        elif reply.status >= 400 and not reply.text.strip():
            failures.append(f"{what}: {reply.status} without a message")
    assert not failures, "\n".join(failures[:40])
    # The values above are mostly unusable: they were refused, not ignored.
    assert sum(reply.status == 400 for _, reply in replies) > len(replies) // 3


async def test_the_examples_from_the_report_get_a_400_that_says_why(web: WebServer) -> None:
    cursor = web.get("/jobs?before=9223372036854775808")
    assert cursor.status == 400
    assert "before" in cursor.text
    assert "is not a job id" in cursor.text
    edge = web.get("/jobs?from=" + quote("0001-01-01T00:00:00+05:00"))
    assert edge.status == 400
    assert "years 1 to 9999" in edge.text
    nul = web.get("/jobs?q=" + quote("a\x00b"))
    assert nul.status == 400
    assert "NUL" in nul.text
    star = Browser(web).post("/entrypoints/pause", {"entrypoint": "*", "back": "/"})
    assert star.status == 400
    assert "is not an entrypoint name" in star.text


async def test_pause_refuses_names_no_config_could_hold(web: WebServer, conn: Any) -> None:
    browser = Browser(web)
    long = browser.post("/entrypoints/pause", {"entrypoint": "a" * 100_000, "back": "/"})
    assert long.status == 400
    assert "at most 200 characters" in long.text
    spaced = browser.post("/entrypoints/pause", {"entrypoint": "two words", "back": "/"})
    assert spaced.status == 400
    assert await conn.fetchval("SELECT count(*) FROM pgqd_entrypoint_pauses") == 0
    fine = browser.post("/entrypoints/pause", {"entrypoint": "django.default", "back": "/"})
    assert fine.status == 303
    assert (await Client(conn).paused()).is_paused("django.default")


async def test_every_answer_carries_the_security_headers_and_pages_are_not_stored(
    tmp_path: Path, db_dsn: str, conn: Any
) -> None:
    config = tmp_path / "auth.toml"
    config.write_text(daemon_config() + '\n[web]\npassword = "right"\n')
    server = WebServer(config, db_dsn).start()
    try:
        good = {"authorization": "Basic " + base64.b64encode(b"pgqd:right").decode()}
        answers = {
            "401": server.get("/"),
            "200": server.get("/jobs", good),
            "404": server.get("/nope", good),
            "405": server.request("PUT", "/jobs", b"", good),
            "403": server.request("POST", "/jobs/action", b"", {**good, "origin": "http://evil.example"}),
        }
        # A table the page needs is gone: an error no handler expects, so a 500 from the server's last resort.
        await conn.execute("DROP TABLE pgqd_action_log")
        answers["500"] = server.get("/actions", good)
        for expected, reply in answers.items():
            assert str(reply.status) == expected, (expected, reply)
            assert "frame-ancestors 'none'" in reply.headers.get("content-security-policy", ""), expected
            assert reply.headers.get("x-content-type-options") == "nosniff", expected
            assert reply.headers.get("x-frame-options") == "DENY", expected
            assert reply.headers.get("cache-control") == "no-store", expected
        assert "Traceback" not in answers["500"].text
        assert "cache-control" not in {k.lower() for k in server.get("/static/style.css", good).headers}
    finally:
        server.stop()


async def test_wrong_passwords_from_one_address_are_slowed_to_a_429(tmp_path: Path, db_dsn: str) -> None:
    config = tmp_path / "auth.toml"
    config.write_text(daemon_config() + '\n[web]\npassword = "right"\n')
    server = WebServer(config, db_dsn).start()
    try:
        wrong = {"authorization": "Basic " + base64.b64encode(b"pgqd:guess").decode()}
        statuses = [server.get("/", wrong).status for _ in range(30)]
        assert statuses[:10] == [401] * 10
        assert set(statuses[10:]) == {429}
        blocked = server.get("/", wrong)
        assert int(blocked.headers["retry-after"]) > 0
        # Even the right password waits out the window: the address is blocked, not the guess.
        right = {"authorization": "Basic " + base64.b64encode(b"pgqd:right").decode()}
        assert server.get("/", right).status == 429
        # A client elsewhere (another address, here through a trusted proxy on the loopback) is not.
        elsewhere = {**right, "x-forwarded-for": "192.0.2.7"}
        assert server.get("/", elsewhere).status == 200
    finally:
        server.stop()


async def test_binary_payloads_show_as_escapes_in_the_list(web: WebServer, conn: Any) -> None:
    job_id = await Client(conn).enqueue("sleeper", b"\xff\xfe\x00ok\x80")
    listing = web.get("/jobs")
    assert str(job_id) in listing.text
    assert "\\xff\\xfe\\x00ok\\x80" in listing.text
    assert "\ufffd" not in listing.text


async def test_a_capped_queue_count_says_at_least_and_gives_a_labelled_estimate(web: WebServer, conn: Any) -> None:
    await conn.execute(
        "INSERT INTO pgqd_jobs (entrypoint, payload, status) SELECT 'sleeper', NULL, 'queued' "
        "FROM generate_series(1, 30000)"
    )
    await conn.execute("ANALYZE pgqd_jobs")
    page = web.get("/")
    assert "≥ 10,000 (estimate: ~" in page.text
    estimate = int(page.text.split("(estimate: ~")[1].split(")")[0].replace(",", ""))
    assert 15_000 < estimate < 60_000


async def test_a_bulk_requeue_requeues_around_dedupe_conflicts_and_names_them(web: WebServer, conn: Any) -> None:
    client = Client(conn)
    held = await client.enqueue_many([JobSpec("sleeper", {"n": i}, dedupe_key=f"order:{i}") for i in range(40)])
    await conn.execute("UPDATE pgqd_jobs SET status = 'failed' WHERE id = ANY ($1::bigint[])", held)
    # A new job took the key of one held job meanwhile: requeueing that one would make two live holders.
    blocker = await client.enqueue("sleeper", "again", dedupe_key="order:7")
    browser = Browser(web)

    everything = browser.post("/failures/requeue", {"scope": "all", "back": "/failures"})
    assert everything.status == 303
    message = notice_of(everything)
    assert "Requeued 39 of 40 held job(s)" in message
    assert f"#{held[7]} key 'order:7' (held by #{blocker})" in message
    states = await client.status(held)
    assert states[held[7]].status == "failed"
    assert sum(s.status == "queued" for s in states.values()) == 39

    # The same through "every matching job", after its confirmation.
    await conn.execute("UPDATE pgqd_jobs SET status = 'failed' WHERE id = ANY ($1::bigint[])", held)
    fields = {"action": "requeue", "scope": "matching", "status": "failed", "back": "/jobs"}
    asked = browser.post("/jobs/action", fields)
    assert 'data-count="40"' in asked.text
    done = browser.post("/jobs/action", {**fields, "confirmed": "40"})
    assert "Requeued 39 matching job(s) (40 counted at confirmation)" in notice_of(done)
    assert f"#{held[7]}" in notice_of(done)


async def test_the_action_log_records_who_did_what_to_how_many(tmp_path: Path, db_dsn: str, conn: Any) -> None:
    config = tmp_path / "auth.toml"
    config.write_text(daemon_config() + '\n[web]\npassword = "right"\nusername = "ops-anna"\n')
    server = WebServer(config, db_dsn).start()
    try:
        auth = {"authorization": "Basic " + base64.b64encode(b"ops-anna:right").decode()}
        ids = await Client(conn).enqueue_many([JobSpec("sleeper", i) for i in range(3)])
        page = server.get("/failures", auth)
        session = page.headers["set-cookie"].split("pgqd_session=")[1].split(";")[0]
        token = page.text.split('name="csrf" value="')[1].split('"')[0]
        headers = {**FORM, **auth, "cookie": f"pgqd_session={session}", "origin": server.url}
        form = {"action": "cancel", "id": [str(i) for i in ids], "back": "/jobs", "csrf": token}
        assert server.request("POST", "/jobs/action", urlencode(form, doseq=True).encode(), headers).status == 303
        paused = {"entrypoint": "sleeper", "back": "/", "csrf": token}
        assert server.request("POST", "/entrypoints/pause", urlencode(paused).encode(), headers).status == 303

        rows = await conn.fetch("SELECT * FROM pgqd_action_log ORDER BY id")
        assert [(r["action"], r["requested"], r["changed"], r["source"]) for r in rows] == [
            ("cancel", 3, 3, "web"),
            ("pause", 1, 1, "web"),
        ]
        assert rows[0]["actor"] == "ops-anna from 127.0.0.1"
        assert rows[0]["target"] == ", ".join(f"#{i}" for i in ids)
        shown = server.get("/actions", auth)
        assert shown.status == 200
        assert "ops-anna from 127.0.0.1" in shown.text
        assert 'data-action="cancel"' in shown.text
    finally:
        server.stop()


async def test_forwarded_headers_cannot_get_a_rebound_name_past_the_loopback_rule(web: WebServer) -> None:
    # A page of evil.example, its name rebound to 127.0.0.1, sending what a proxy on the loopback would send.
    rebound = {"host": f"evil.example:{web.port}", "x-forwarded-host": f"127.0.0.1:{web.port}"}
    refused = web.get("/jobs", rebound)
    assert refused.status == 403
    assert "answers only to 127.0.0.1 or localhost" in refused.text
    assert web.get("/jobs", {"x-forwarded-host": f"localhost:{web.port}"}).status == 200


def test_a_trusted_proxy_that_is_no_address_stops_the_start_with_a_usage_error(tmp_path: Path, db_dsn: str) -> None:
    config = tmp_path / "queue.toml"
    config.write_text(daemon_config())
    done = run_pgqd(
        "web", "--config", str(config), "--trusted-proxies", "10.0.0.5,proxy.internal", env={"PGQD_DSN": db_dsn}
    )
    assert done.returncode == 2
    assert "trusted proxy 'proxy.internal' is not an IP address or network" in done.stderr
