"""``pgqd mcp``: every tool called through the official MCP SDK's client, with ``pgqd mcp`` spawned over stdio
against a real database holding jobs in every state."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from pgqd import Client
from tests.support.cli import PGQD, run_pgqd
from tests.support.daemon import REPO
from tests.support.tcp_proxy import TcpProxy
from tests.test_stats import fill

TOOLS = {
    "queue_depth",
    "throughput",
    "failed_jobs",
    "job_detail",
    "workers",
    "schedules",
    "paused_entrypoints",
    "history",
    "running_jobs",
    "workflow",
}


@contextlib.asynccontextmanager
async def mcp_session(db_dsn: str, tmp_path: Path, *options: str) -> AsyncIterator[ClientSession]:
    """``pgqd mcp --config queue.toml`` spawned by the SDK's stdio client, initialised. Entered inside the test
    rather than as a fixture: the SDK's task group must be left from the task that entered it."""
    config = tmp_path / "queue.toml"
    config.write_text(
        f'[database]\ndsn = "{db_dsn}"\n\n[entrypoints.mail]\nhandler = "tests.support.daemon_app:other"\n'
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("PGQD_")}
    server = StdioServerParameters(command=PGQD, args=["mcp", "--config", str(config), *options], env=env, cwd=REPO)
    with (tmp_path / "mcp-stderr.log").open("w") as errors:
        async with stdio_client(server, errlog=errors) as (read, write), ClientSession(read, write) as client:
            await client.initialize()
            yield client


async def call(session: ClientSession, tool: str, **arguments: Any) -> Any:
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, result.content
    [content] = result.content
    return json.loads(content.text)  # type: ignore[union-attr]


async def test_every_tool_answers_from_the_database_over_stdio(db_dsn: str, conn: Any, tmp_path: Path) -> None:
    ids = await fill(db_dsn)
    await Client(conn).pause("report")
    async with mcp_session(db_dsn, tmp_path) as session:
        await check_every_tool(session, conn, ids)


async def check_every_tool(session: ClientSession, conn: Any, ids: dict[str, Any]) -> None:

    listed = await session.list_tools()
    assert {tool.name for tool in listed.tools} == TOOLS
    assert all(tool.annotations is not None and tool.annotations.read_only_hint for tool in listed.tools)

    depth = {q["entrypoint"]: q for q in (await call(session, "queue_depth"))["entrypoints"]}
    assert {k: depth["mail"][k] for k in ("queued", "deferred", "running", "held", "paused", "suspects")} == {
        "queued": 3, "deferred": 1, "running": 1, "held": 1, "paused": False, "suspects": 0,
    }  # fmt: skip
    assert depth["mail"]["oldest_eligible_age"] >= 0
    assert depth["report"]["paused"] is True

    throughput = await call(session, "throughput", window_minutes=10, bucket_minutes=1)
    assert throughput["totals"] == {"report": {"succeeded": 1, "failed": 1, "other": 0}}
    assert sum(b["succeeded"] for b in throughput["buckets"]) == 1

    failed = await call(session, "failed_jobs")
    assert [(h["id"], h["error_type"], h["error_message"]) for h in failed["held"]] == [
        (ids["held"], "IOError", "smtp down")
    ]
    assert [(f["id"], f["status"], f["error_type"]) for f in failed["recent_failures"]] == [
        (ids["bad"], "exception", "KeyError")
    ]
    assert (await call(session, "failed_jobs", entrypoint="report"))["held"] == []

    queued = await call(session, "job_detail", job_id=ids["mail"][4])
    assert (queued["status"], queued["entrypoint"], queued["payload"]["json"]) == ("queued", "mail", {"n": 4})
    finished = await call(session, "job_detail", job_id=ids["ok"])
    assert (finished["status"], finished["result"], finished["payload"]) == ("successful", {"pages": 3}, None)
    assert finished["finished_at"] is not None
    held = await call(session, "job_detail", job_id=ids["held"])
    assert (held["status"], held["error_traceback"]) == ("failed", "tb")

    [worker] = (await call(session, "workers"))["workers"]
    assert (worker["host"], worker["pid"], worker["running"], worker["entrypoints"]) == (
        "host-a", 4242, 1, ["mail", "report"],
    )  # fmt: skip

    await conn.execute(
        "INSERT INTO pgqd_schedules (name, cron, timezone, entrypoint, next_run) "
        "VALUES ('nightly', '0 3 * * *', 'Europe/Oslo', 'report', now() + interval '1 day')"
    )
    [schedule] = (await call(session, "schedules"))["schedules"]
    assert (schedule["name"], schedule["cron"], schedule["timezone"], schedule["enabled"]) == (
        "nightly", "0 3 * * *", "Europe/Oslo", True,
    )  # fmt: skip

    assert await call(session, "paused_entrypoints") == {"all_paused": False, "paused": ["report"], "excepted": []}

    [report] = (await call(session, "history"))["entrypoints"]
    assert (report["entrypoint"], report["outcomes"]) == ("report", {"succeeded": 1, "failed": 1, "other": 0})
    assert (await call(session, "history", period="7d", status="failed"))["rolled_at"] is None  # no daemon ran
    [running] = (await call(session, "running_jobs"))["running"]
    assert (running["entrypoint"], running["host"], running["pid"]) == ("mail", "host-a", 4242)


async def test_tools_report_bad_arguments_and_unknown_jobs_as_tool_errors(db_dsn: str, tmp_path: Path) -> None:
    async with mcp_session(db_dsn, tmp_path) as session:
        await check_bad_calls(session)


async def check_bad_calls(session: ClientSession) -> None:
    missing = await session.call_tool("job_detail", {"job_id": 987654321})
    assert missing.is_error
    assert "no job 987654321" in missing.content[0].text  # type: ignore[union-attr]
    too_many = await session.call_tool("failed_jobs", {"limit": 100_000})
    assert too_many.is_error
    assert "limit must be between 1 and 500" in too_many.content[0].text  # type: ignore[union-attr]
    wrong_type = await session.call_tool("job_detail", {"job_id": "seven"})
    assert wrong_type.is_error
    # The server is still there after bad calls.
    assert (await call(session, "paused_entrypoints"))["all_paused"] is False


async def test_a_tool_call_that_waits_on_a_lock_fails_at_the_db_timeout_and_the_next_one_answers(
    db_dsn: str, conn: Any, tmp_path: Path
) -> None:
    async with mcp_session(db_dsn, tmp_path, "--db-timeout", "1s") as session:
        async with conn.transaction():
            await conn.execute("LOCK TABLE pgqd_jobs IN ACCESS EXCLUSIVE MODE")
            held = await session.call_tool("failed_jobs", {})
        assert held.is_error
        said = held.content[0].text  # type: ignore[union-attr]
        assert "the database did not answer within 1s" in said
        assert "the server said: canceling statement due to statement timeout" in said
        assert (await call(session, "failed_jobs"))["held"] == []


async def test_a_tool_call_on_a_server_that_stopped_answering_fails_at_the_db_timeout_and_one_after_answers(
    db_dsn: str, tmp_path: Path
) -> None:
    with TcpProxy.for_dsn(db_dsn) as proxy:
        async with mcp_session(proxy.route(db_dsn), tmp_path, "--db-timeout", "1s") as session:
            assert (await call(session, "failed_jobs"))["held"] == []
            proxy.freeze()
            started = time.monotonic()
            frozen = await session.call_tool("failed_jobs", {})
            waited = time.monotonic() - started
            assert frozen.is_error
            said = frozen.content[0].text  # type: ignore[union-attr]
            assert "the database did not answer within 1s (no answer came at all)" in said
            # The bound and the client's margin after it (2 s), not twice that: a bound kept, not a hang.
            assert waited < 5, waited
            proxy.thaw()
            assert (await call(session, "failed_jobs"))["held"] == []


def test_mcp_without_a_reachable_database_says_so() -> None:
    done = run_pgqd("mcp", "--dsn", "postgresql://postgres@127.0.0.1:1/none", timeout=30)
    assert done.returncode == 1
    assert "could not connect to postgresql://postgres@127.0.0.1:1/none" in done.stderr


def test_without_the_mcp_extra_the_command_names_it(tmp_path: Path) -> None:
    # A stand-in package that fails to import, as a missing one does.
    fake = tmp_path / "site" / "mcp"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'mcp'\")\n")
    done = run_pgqd(
        "mcp", "--dsn", "postgresql://postgres@127.0.0.1:1/none", env={"PYTHONPATH": str(tmp_path / "site")}
    )
    assert done.returncode == 2
    assert "pip install 'pgqd[mcp]'" in done.stderr
