"""The queue gauges' statement: exact below its count limit, capped above it, and never a scan of the jobs table;
and the check-in line and the readiness rule that replace the supervisor's own queries."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pgqd.daemon.check_in import CheckIn, parse_check_in
from pgqd.daemon.supervisor.health import SupervisorView, readiness_problems
from pgqd.daemon.worker.side_connection import SideConnection
from pgqd.identifiers import Names
from pgqd.sql import render
from pgqd.sql.queue_gauges import QUEUE_GAUGES

GAUGES = render(QUEUE_GAUGES, Names())
INSERT = """
INSERT INTO pgqd_jobs (entrypoint, priority, status, execute_after)
SELECT $1, $2, $3::pgqd_job_status, now() + make_interval(secs => $4) FROM generate_series(1, $5)
"""


async def gauges(conn: Any, limit: int) -> dict[tuple[str, str], tuple[int, float | None]]:
    rows = await conn.fetch(GAUGES, limit, 1000)
    return {(r["entrypoint"], r["status"]): (r["jobs"], r["oldest_age"]) for r in rows}


async def test_queue_gauges_count_every_status_exactly_below_the_limit_and_stop_at_it(conn: Any) -> None:
    await conn.execute(INSERT, "mail", 0, "queued", -30.0, 4)  # waiting for 30 s
    await conn.execute(INSERT, "mail", 5, "queued", -10.0, 3)  # a higher priority, waiting for 10 s
    await conn.execute(INSERT, "mail", 0, "picked", -1.0, 2)
    await conn.execute(INSERT, "resize", 0, "deferred", 3600.0, 5)  # due in an hour
    await conn.execute(INSERT, "resize", 0, "deferred", -60.0, 1)  # due a minute ago
    await conn.execute(INSERT, "report", 0, "failed", -1.0, 2)
    await conn.execute(INSERT, "report", 0, "suspect", -1.0, 4)
    await conn.execute(INSERT, "pdf", 0, "waiting", -1.0, 5)  # workflow steps waiting for their parents
    found = await gauges(conn, 100)
    assert {key: jobs for key, (jobs, _) in found.items()} == {
        ("mail", "queued"): 7,
        ("mail", "picked"): 2,
        ("resize", "deferred"): 6,
        ("report", "failed"): 2,
        ("report", "suspect"): 4,
        ("pdf", "waiting"): 5,
    }
    # The oldest job that could run now: the oldest head over every priority; a due deferred job counts.
    assert 30 <= found[("mail", "queued")][1] < 40
    assert 60 <= found[("resize", "deferred")][1] < 70
    capped = await gauges(conn, 3)
    assert {key: jobs for key, (jobs, _) in capped.items()} == {
        ("mail", "queued"): 3,
        ("mail", "picked"): 2,
        ("resize", "deferred"): 3,
        ("report", "failed"): 2,
        ("report", "suspect"): 3,
        ("pdf", "waiting"): 3,
    }


async def test_queue_gauges_read_indexes_only_whatever_the_table_size(conn: Any) -> None:
    await conn.execute(INSERT, "bulk", 0, "queued", -5.0, 100_000)
    await conn.execute(INSERT, "later", 0, "deferred", 600.0, 50_000)
    await conn.execute(INSERT, "steps", 0, "waiting", -1.0, 50_000)
    await conn.execute("VACUUM ANALYZE pgqd_jobs")
    plan = json.loads(await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + GAUGES, 1000, 1000))
    text = json.dumps(plan)
    assert '"Seq Scan"' not in text
    # Not one jobs row more than the count limit per entrypoint and status is read.
    read = sum(node.get("Actual Rows", 0) * node.get("Actual Loops", 1) for node in _nodes(plan[0]["Plan"]))
    assert read < 20_000, read
    found = await gauges(conn, 1000)
    assert found[("bulk", "queued")][0] == 1000
    assert found[("later", "deferred")] == (1000, None)


def _nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    scans = [node] if "Scan" in node["Node Type"] and node.get("Relation Name") == "pgqd_jobs" else []
    for child in node.get("Plans", []):
        scans += _nodes(child)
    return scans


def test_a_check_in_says_what_the_supervisor_needs_and_survives_its_pipe() -> None:
    check_in = CheckIn(worker_id=12, jobs_started=40, retiring=False, running=3, database_age=0.25)
    assert parse_check_in(check_in.encode().rstrip(b"\n")) == check_in
    starting = CheckIn(worker_id=0, jobs_started=0, retiring=False, running=0, database_age=None)
    assert parse_check_in(starting.encode().strip()) == starting
    assert parse_check_in(b"check-in 12 40 0") is None  # a torn line is ignored, not misread
    assert parse_check_in(b"check-in 12 40 0 x 1.0") is None
    assert parse_check_in(b"status 12 40 0 3 0.250") is None  # nor a foreign one


def view(**changes: Any) -> SupervisorView:
    ready = SupervisorView(2, 2, 2, False, {}, 0, database_silent_for=1.0, database_bound=15.0)
    return SupervisorView(**{**ready.__dict__, **changes})


def test_readiness_is_judged_from_the_check_ins_with_the_reason_in_words() -> None:
    assert readiness_problems(view()) == []
    assert readiness_problems(view(database_silent_for=21.6)) == ["database unreachable for 22s by every worker"]
    assert readiness_problems(view(database_silent_for=None)) == ["database not reached yet by any worker"]
    assert readiness_problems(view(running=0, checked_in=0)) == ["no worker running"]
    assert readiness_problems(view(running=1, checked_in=1)) == ["1 of 2 workers running and checked in"]
    assert readiness_problems(view(stopping=True)) == ["stopping"]


class _Lines:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.warnings.append(event)


async def test_a_side_connection_warns_once_per_run_of_failures_and_says_when_it_ends(db_dsn: str) -> None:
    lines = _Lines()
    side = SideConnection("postgresql://127.0.0.1:9/none", "pgqd-test", 2.0, lines, "not collected")
    for _ in range(3):
        with pytest.raises(ConnectionRefusedError):
            await side.get()
        side.failed(OSError("refused"))
    assert lines.warnings == ["not collected"]
    side.dsn = db_dsn
    assert await (await side.get()).fetchval("SELECT current_setting('application_name')") == "pgqd-test"
    assert side.succeeded() is True
    assert side.succeeded() is False
    side.close()
