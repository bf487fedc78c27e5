"""The web UI's views of history, running jobs, suspects and the job search's seeking, over HTTP against the real
``pgqd web`` server and a real database; and the log rollup the history reads, against the same database."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pgqd import Client, Entrypoint, JobSpec, PostgresBackend, Worker, WorkerSettings
from pgqd.daemon.worker.log_rollup import (
    KEEP,
    LONGEST_SLICE,
    SHORTEST_SLICE,
    SLICE_TARGET_S,
    LogRollup,
    next_slice,
)
from pgqd.identifiers import Names
from pgqd.ops.browse import SEARCH_WINDOW
from pgqd.ops.history import class_seconds, percentiles
from tests.support.daemon import StartDaemon, daemon_config
from tests.support.waiting import wait_until
from tests.support.web import WebServer
from tests.test_web_http import Browser

# sleeper's runs are cut at 60 s: the running-jobs page marks those past it.
CONFIG = daemon_config(extra='timeout = "60s"\n\n[entrypoints.report]\nhandler = "tests.support.daemon_app:other"\n')

# Log rows of `entrypoint` that finished $2 ago: $3 of them, each waiting $4 s and running $5 s, with status $6.
ADD_LOG_ROWS = """
INSERT INTO pgqd_log (job_id, entrypoint, priority, status, attempts, created_at, execute_after, started_at,
                      finished_at)
SELECT $7::bigint + g, $1, 0, $6::pgqd_final_status, 1,
       t.finished - make_interval(secs => $4::float8 + $5::float8 + 60),
       t.finished - make_interval(secs => $4::float8 + $5::float8), t.finished - make_interval(secs => $5::float8),
       t.finished
FROM generate_series(1, $3) AS g, LATERAL (SELECT now() - $2::text::interval - g * interval '1 ms' AS finished) AS t
"""


@pytest.fixture
def web(tmp_path: Path, db_dsn: str) -> Iterator[WebServer]:
    config = tmp_path / "queue.toml"
    config.write_text(CONFIG)
    server = WebServer(config, db_dsn).start()
    yield server
    server.stop()


async def add_log_rows(
    conn: Any, entrypoint: str, ago: str, jobs: int, wait: float, run: float, status: str = "successful"
) -> None:
    first = await conn.fetchval("SELECT COALESCE(max(job_id), 1000000) FROM pgqd_log")
    await conn.execute(ADD_LOG_ROWS, entrypoint, ago, jobs, wait, run, status, first)


def cell(page: str, entrypoint: str, column: str) -> str:
    row = re.search(rf'<tr data-entrypoint="{entrypoint}">(.*?)</tr>', page, re.S)
    assert row, page
    found = re.search(rf'data-col="{column}">([^<]*)<', row[1])
    assert found, row[1]
    return found[1].strip()


def seconds_of(shown: str) -> float:
    number, unit = shown.split()
    return float(number) * {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0}[unit]


def test_percentiles_of_a_class_histogram_are_within_a_class_of_the_truth() -> None:
    found = percentiles({40: 50, 41: 45, 60: 4, 70: 1})
    assert found is not None
    assert (found.p50, found.p95, found.p99) == (class_seconds(40), class_seconds(41), class_seconds(60))
    assert found.jobs == 100
    assert percentiles({}) is None
    for seconds in (0.0012, 0.25, 3.0, 7200.0):
        cls = int(4 * math.log2(seconds / 0.001))
        assert abs(class_seconds(cls) / seconds - 1) < 0.09


async def test_the_last_hour_shows_counts_run_times_and_waits_per_entrypoint(web: WebServer, conn: Any) -> None:
    await add_log_rows(conn, "sleeper", "10 minutes", 200, wait=0.05, run=0.4)
    await add_log_rows(conn, "sleeper", "20 minutes", 10, wait=0.05, run=3.0, status="exception")
    await add_log_rows(conn, "report", "5 minutes", 30, wait=2.0, run=0.02)
    await add_log_rows(conn, "report", "2 hours", 500, wait=9.0, run=9.0)  # outside the hour

    page = web.get("/history").text
    assert cell(page, "sleeper", "succeeded") == "200"
    assert cell(page, "sleeper", "failed") == "10"
    assert cell(page, "report", "succeeded") == "30"
    assert abs(seconds_of(cell(page, "sleeper", "run-p50")) / 0.4 - 1) < 0.1
    assert abs(seconds_of(cell(page, "sleeper", "wait-p50")) / 0.05 - 1) < 0.1
    assert abs(seconds_of(cell(page, "report", "wait-p50")) / 2.0 - 1) < 0.1
    assert page.count("<polyline") >= 3  # p50, p95 and p99 of the run time at least

    failures = web.get("/history?status=failed").text
    assert cell(failures, "sleeper", "failed") == "10"
    assert 'data-entrypoint="report"' not in failures
    assert abs(seconds_of(cell(failures, "sleeper", "run-p50")) / 3.0 - 1) < 0.1
    one = web.get("/history?entrypoint=report").text
    assert 'data-entrypoint="sleeper"' not in one

    for bad in ("range=2d", "status=queued", "entrypoint=a%00b"):
        answer = web.get("/history?" + bad)
        assert answer.status == 400, bad
        assert bad.split("=")[0] in answer.text


async def test_a_day_and_a_week_come_from_the_rollup_the_daemon_keeps(web: WebServer, conn: Any, db_dsn: str) -> None:
    await add_log_rows(conn, "sleeper", "3 hours", 40, wait=0.1, run=1.0)
    await add_log_rows(conn, "sleeper", "3 days", 25, wait=0.1, run=1.0, status="timeout")
    await add_log_rows(conn, "report", "9 days", 7, wait=0.1, run=1.0)  # older than the longest range
    day = web.get("/history?range=24h").text
    assert "No job finished in this range" in day  # nothing rolled up yet, and the page says why
    assert "No daemon has rolled up the log yet" in day

    rollup = LogRollup(db_dsn, Names())
    await rollup.step()
    day = web.get("/history?range=24h").text
    assert 'id="rollup-behind"' not in day
    assert cell(day, "sleeper", "succeeded") == "40"
    assert cell(day, "sleeper", "failed") == "0"
    week = web.get("/history?range=7d").text
    assert cell(week, "sleeper", "succeeded") == "40"
    assert cell(week, "sleeper", "failed") == "25"
    assert 'data-entrypoint="report"' not in week
    assert abs(seconds_of(cell(week, "sleeper", "run-p50")) / 1.0 - 1) < 0.1
    timeouts = web.get("/history?range=7d&status=timeout").text
    assert cell(timeouts, "sleeper", "failed") == "25"
    assert cell(timeouts, "sleeper", "succeeded") == "0"

    # Open tabs share one reading while the rollup stays where it was; what the next pass left shows at once.
    await conn.execute("UPDATE pgqd_log_rollup SET jobs = jobs + 5 WHERE measure = 0 AND entrypoint = 'sleeper'")
    assert cell(web.get("/history?range=24h").text, "sleeper", "succeeded") == "40"
    await rollup.step()
    assert cell(web.get("/history?range=24h").text, "sleeper", "succeeded") == "45"


async def test_the_rollup_counts_what_the_log_holds_and_follows_it(conn: Any, db_dsn: str) -> None:
    await add_log_rows(conn, "sleeper", "90 minutes", 300, wait=0.01, run=0.2)
    await add_log_rows(conn, "sleeper", "1 minute", 50, wait=0.01, run=0.2, status="exception")
    await add_log_rows(conn, "report", "2 days", 20, wait=0.5, run=0.5)
    too_old = KEEP + timedelta(minutes=1)
    await conn.execute(
        "INSERT INTO pgqd_log_rollup VALUES (now() - $1::interval, 'gone', 'successful', 0, 0, 9)", too_old
    )
    await conn.execute(
        "INSERT INTO pgqd_log (job_id, entrypoint, priority, status, attempts, created_at, finished_at)"
        " VALUES (1, 'report', 0, 'canceled', 0, now() - interval '2 days', now() - interval '2 days')"
    )
    # Counted once settled; here at once, so that the rows added below count in the next pass.
    rollup = LogRollup(db_dsn, Names(), settle=timedelta(0))
    await rollup.step()
    by_hour = (
        "SELECT date_trunc('hour', finished_at), entrypoint, status::text, count(*) FROM pgqd_log"
        " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    )
    counted = (
        "SELECT bucket_start, entrypoint, status::text, jobs FROM pgqd_log_rollup WHERE measure = 0 ORDER BY 1, 2, 3"
    )
    assert [tuple(r) for r in await conn.fetch(counted)] == [tuple(r) for r in await conn.fetch(by_hour)]
    # The run-time histogram counts every job that started; the canceled one never did.
    assert await conn.fetchval("SELECT sum(jobs) FROM pgqd_log_rollup WHERE measure = 1") == 370

    # Each pass adds what finished since the last one, and counts nothing twice.
    past_counted = "SELECT now() - interval '20 ms' > s.rolled_at FROM pgqd_log_rollup_state AS s"
    await wait_until(lambda: conn.fetchval(past_counted), timeout=5, what="the clock past the counted position")
    await add_log_rows(conn, "sleeper", "0 minutes", 5, wait=0.01, run=0.2)
    await rollup.step()
    assert [tuple(r) for r in await conn.fetch(counted)] == [tuple(r) for r in await conn.fetch(by_hour)]
    await rollup.step()
    assert [tuple(r) for r in await conn.fetch(counted)] == [tuple(r) for r in await conn.fetch(by_hour)]
    assert not await conn.fetchval("SELECT count(*) FROM pgqd_log_rollup WHERE entrypoint = 'gone'")


@pytest.mark.parametrize(
    ("slice_", "took_s", "next_"),
    [
        (LONGEST_SLICE, 0.01, LONGEST_SLICE),  # quick at the longest: stays there
        (timedelta(minutes=8), 0.01, timedelta(minutes=16)),  # quick: doubles
        (timedelta(minutes=8), SLICE_TARGET_S * 0.5, timedelta(minutes=8)),  # about right: stays
        (timedelta(minutes=8), SLICE_TARGET_S * 3, timedelta(minutes=4)),  # slow: halves
        (SHORTEST_SLICE, 5.0, SHORTEST_SLICE),  # slow at the shortest: stays there
    ],
)
def test_each_slice_of_the_rollup_is_sized_by_how_long_the_last_took(
    slice_: timedelta, took_s: float, next_: timedelta
) -> None:
    assert next_slice(slice_, took_s) == next_


async def test_a_pass_counts_a_long_span_in_slices_and_each_row_once(conn: Any, db_dsn: str) -> None:
    for ago in ("5 hours", "150 minutes", "20 minutes", "2 minutes"):
        await add_log_rows(conn, "sleeper", ago, 30, wait=0.01, run=0.2)
    rollup = LogRollup(db_dsn, Names())
    rollup.slice = timedelta(minutes=7)  # the first of many slices over eight days of (mostly empty) log
    await rollup.step()
    assert rollup.slice > timedelta(minutes=7)  # quick slices grew: the pass ran several
    by_hour = "SELECT date_trunc('hour', finished_at), count(*) FROM pgqd_log GROUP BY 1 ORDER BY 1"
    counted = "SELECT bucket_start, jobs FROM pgqd_log_rollup WHERE measure = 0 ORDER BY 1"
    assert [tuple(r) for r in await conn.fetch(counted)] == [tuple(r) for r in await conn.fetch(by_hour)]
    settled = await conn.fetchval("SELECT s.rolled_at FROM pgqd_log_rollup_state AS s")
    assert settled is not None
    await rollup.step()  # nothing finished since: nothing added
    assert [tuple(r) for r in await conn.fetch(counted)] == [tuple(r) for r in await conn.fetch(by_hour)]


async def test_a_pass_counts_no_slice_of_a_stretch_with_nothing_in_it(conn: Any, db_dsn: str) -> None:
    rollup = LogRollup(db_dsn, Names(), settle=timedelta(0))
    await rollup.step()  # a new install: eight days of log with no row
    assert rollup.slices == 0
    assert await conn.fetchval("SELECT s.rolled_at FROM pgqd_log_rollup_state AS s") is not None

    await conn.execute("DELETE FROM pgqd_log_rollup_state")  # counted from eight days ago again
    for ago in ("6 days", "2 minutes"):
        await add_log_rows(conn, "sleeper", ago, 30, wait=0.01, run=0.2)
    await rollup.step()
    by_hour = "SELECT date_trunc('hour', finished_at), count(*) FROM pgqd_log GROUP BY 1 ORDER BY 1"
    counted = "SELECT bucket_start, jobs FROM pgqd_log_rollup WHERE measure = 0 ORDER BY 1"
    assert [tuple(r) for r in await conn.fetch(counted)] == [tuple(r) for r in await conn.fetch(by_hour)]
    # Sliced from eight days ago (slices of 10 s doubling to an hour), a pass took about 200 slices; going from
    # row to row, a few at each of the two moments with rows.
    assert rollup.slices <= 12, rollup.slices


async def test_the_log_keeps_the_due_time_so_a_deferred_job_waits_from_then(conn: Any, db_dsn: str) -> None:
    job_id = await Client(conn).enqueue("sleeper", "0", execute_after=timedelta(hours=1))
    # Created 10 s ago, due 2 s ago: it waited 2 s, not 10.
    due = await conn.fetchval(
        "UPDATE pgqd_jobs SET created_at = now() - interval '10 s', execute_after = now() - interval '2 s'"
        " WHERE id = $1 RETURNING execute_after",
        job_id,
    )
    backend = await PostgresBackend.open(db_dsn)
    try:

        async def quick(_job: Any) -> None:
            return None

        await Worker(backend, [Entrypoint("sleeper", quick)], WorkerSettings(poll_interval=0.2)).run(drain=True)
    finally:
        await backend.close()
    row = await conn.fetchrow("SELECT created_at, execute_after, started_at FROM pgqd_log WHERE job_id = $1", job_id)
    assert row["execute_after"] == due
    assert 2 <= (row["started_at"] - row["execute_after"]).total_seconds() < 9


async def test_running_jobs_show_their_worker_and_those_past_timeout_or_usual_time_stand_out(
    web: WebServer, conn: Any
) -> None:
    worker = await conn.fetchval(
        "INSERT INTO pgqd_workers (host, pid, entrypoints) VALUES ('node-7', 4242, '{sleeper,report}') RETURNING id"
    )
    # What a run of report usually takes: about 1 s.
    await add_log_rows(conn, "report", "10 minutes", 40, wait=0.01, run=1.0)
    client = Client(conn)
    on_time, overdue, slow = await client.enqueue_many(
        [JobSpec("sleeper", "1"), JobSpec("sleeper", "2"), JobSpec("report", "3")]
    )
    await conn.execute(
        "UPDATE pgqd_jobs SET status = 'picked', worker_id = $1,"
        " picked_at = now() - CASE id WHEN $2 THEN interval '5 s' WHEN $3 THEN interval '10 min'"
        " ELSE interval '30 s' END WHERE id = ANY($4::bigint[])",
        worker,
        on_time,
        overdue,
        [on_time, overdue, slow],
    )
    page = web.get("/running").text
    order = [int(i) for i in re.findall(r'<tr data-job="(\d+)"', page)]
    assert order == [overdue, slow, on_time]  # longest-running first
    rows = {int(m[1]): m[2] for m in re.finditer(r'<tr data-job="(\d+)"([^>]*)>', page)}
    assert 'class="overdue"' in rows[overdue]
    assert 'class="slow"' in rows[slow]
    assert rows[on_time] == ""
    assert page.count("node-7:4242") == 3
    only = web.get("/running?entrypoint=report").text
    assert re.findall(r'<tr data-job="(\d+)"', only) == [str(slow)]


async def test_suspects_have_a_column_a_status_filter_and_bulk_actions(web: WebServer, conn: Any) -> None:
    client = Client(conn)
    suspects = await client.enqueue_many([JobSpec("sleeper", {"n": n}) for n in range(3)])
    bystander = await client.enqueue("sleeper", {"n": "queued"})
    await conn.execute("UPDATE pgqd_jobs SET status = 'suspect' WHERE id = ANY($1::bigint[])", suspects)

    overview = web.get("/").text
    assert re.search(r'data-col="suspects"><a href="/jobs\?status=suspect&amp;entrypoint=sleeper">3</a>', overview)
    listed = web.get("/jobs?status=suspect")
    assert listed.status == 200
    assert sorted(int(i) for i in re.findall(r'href="/jobs/(\d+)"', listed.text)) == suspects

    matching = {"action": "cancel", "scope": "matching", "status": "suspect", "back": "/jobs"}
    browser = Browser(web)
    confirmation = browser.post("/jobs/action", matching)
    assert confirmation.status == 200
    assert "3" in confirmation.text
    done = browser.post("/jobs/action", {**matching, "confirmed": "3"})
    assert done.status == 303
    states = await client.status([*suspects, bystander])
    assert {states[i].status for i in suspects} == {"canceled"}
    assert states[bystander].status == "queued"


async def test_jobs_are_found_by_id_dedupe_key_and_header(web: WebServer, conn: Any) -> None:
    client = Client(conn)
    keyed = await client.enqueue("sleeper", "1", dedupe_key="invoice:77")
    tagged = await client.enqueue("sleeper", "2", headers={"tenant": "acme", "shard": 3})
    await client.enqueue_many([JobSpec("sleeper", str(n), headers={"tenant": "other"}) for n in range(5)])

    found = web.get(f"/jobs?id={keyed}")
    assert found.status == 303
    assert found.headers["location"] == f"/jobs/{keyed}"
    for bad in ("abc", "%C2%B2", "99999999999999999999", "-1"):
        assert web.get(f"/jobs?id={bad}").status == 400, bad
    for field in ("key", "header", "q"):
        assert web.get(f"/jobs?{field}=a%00b").status == 400, field

    def ids(query: str) -> list[int]:
        answer = web.get("/jobs?" + query)
        assert answer.status == 200, answer.text
        return [int(i) for i in re.findall(r'href="/jobs/(\d+)"', answer.text)]

    assert ids("key=invoice%3A77") == [keyed]
    assert ids("key=nobody") == []
    assert ids("header=tenant%3Dacme") == [tagged]
    assert ids("header=shard%3D3") == [tagged]
    assert ids("header=tenant%3Dnobody") == []
    assert web.get("/jobs?header=tenant").status == 400

    matching = {"action": "cancel", "scope": "matching", "header": "tenant=acme", "back": "/jobs"}
    browser = Browser(web)
    confirmation = browser.post("/jobs/action", matching)
    assert confirmation.status == 200
    assert 'name="header" value="tenant=acme"' in confirmation.text
    done = browser.post("/jobs/action", {**matching, "confirmed": "1"})
    assert done.status == 303
    assert (await client.status([tagged]))[tagged].status == "canceled"
    assert await conn.fetchval("SELECT count(*) FROM pgqd_jobs WHERE status = 'queued'") == 6


async def test_a_time_filter_jumps_straight_to_its_time(web: WebServer, conn: Any) -> None:
    # Twice the search window of jobs, one a minute going back, live and finished, with a failure now and then.
    total = 2 * SEARCH_WINDOW
    await conn.execute(
        "INSERT INTO pgqd_jobs (id, entrypoint, payload, created_at, execute_after)"
        " SELECT g, 'sleeper', 'hay', now() - ($1 - g) * interval '1 minute', now() FROM generate_series(1, $1) AS g"
        " WHERE g % 2 = 0",
        total,
    )
    await conn.execute(
        "INSERT INTO pgqd_log (job_id, entrypoint, priority, status, attempts, created_at, started_at, finished_at)"
        " SELECT g, 'sleeper', 0, (CASE WHEN g % 7 = 0 THEN 'exception' ELSE 'successful' END)::pgqd_final_status,"
        " 1, now() - ($1 - g) * interval '1 minute', now() - ($1 - g) * interval '1 minute',"
        " now() - ($1 - g) * interval '1 minute' + interval '1 s' FROM generate_series(1, $1) AS g WHERE g % 2 = 1",
        total,
    )
    await conn.execute("SELECT setval('pgqd_jobs_id_seq', $1)", total + 1)
    # Some 20 days back: far beyond the newest window of each table.
    until = datetime.now(UTC) - timedelta(minutes=total - 1000)
    since = until - timedelta(minutes=30)
    since, until = (moment.replace(second=0, microsecond=0) for moment in (since, until))  # as the form sends them
    form = f"from={since:%Y-%m-%dT%H:%M}&until={until:%Y-%m-%dT%H:%M}"
    page = web.get(f"/jobs?status=exception&{form}").text
    failures = await conn.fetch(
        "SELECT job_id FROM pgqd_log WHERE status = 'exception' AND created_at >= $1 AND created_at < $2"
        " ORDER BY job_id DESC",
        since,
        until,
    )
    assert [int(i) for i in re.findall(r'href="/jobs/(\d+)"', page)] == [r[0] for r in failures]
    assert failures
    assert "Search older jobs" not in page  # the range ends within the page: nothing older to look for
    assert "Older »" not in page

    everything = [int(i) for i in re.findall(r'href="/jobs/(\d+)"', web.get(f"/jobs?{form}").text)]
    created = await conn.fetch(
        "SELECT id FROM pgqd_jobs WHERE created_at >= $1 AND created_at < $2"
        " UNION ALL SELECT job_id FROM pgqd_log WHERE created_at >= $1 AND created_at < $2 ORDER BY 1 DESC",
        since,
        until,
    )
    assert everything == [r[0] for r in created]
    assert 25 <= len(everything) <= 31


async def test_the_daemon_keeps_the_rollup(conn: Any, start_daemon: StartDaemon) -> None:
    await add_log_rows(conn, "sleeper", "2 hours", 12, wait=0.1, run=0.1)
    start_daemon(daemon_config(processes=1)).wait_ready()
    rolled = "SELECT sum(jobs) FROM pgqd_log_rollup WHERE measure = 0"
    assert await wait_until(lambda: conn.fetchval(rolled), timeout=20, what="the lead worker's first rollup") == 12


async def test_a_live_job_is_found_by_its_dedupe_key_however_old(web: WebServer, conn: Any) -> None:
    oldest = await Client(conn).enqueue("sleeper", "1", dedupe_key="report:2026-01")
    await conn.execute(
        "INSERT INTO pgqd_jobs (entrypoint, payload) SELECT 'sleeper', 'hay' FROM generate_series(1, $1)",
        SEARCH_WINDOW + 10,
    )
    page = web.get("/jobs?key=report%3A2026-01").text
    assert re.findall(r'href="/jobs/(\d+)"', page) == [str(oldest)]
