"""Workflows as operators see them: the web job page and workflow page (real Chromium), ``pgqd jobs show``, the
MCP tool, and the waiting gauge of /metrics."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgqd import Client, Entrypoint, JobSpec, PostgresBackend, RetryPolicy, Worker, WorkerSettings, Workflow
from pgqd.ops.workflows import WorkflowReads, layered
from tests.support.cli import run_pgqd
from tests.support.daemon import daemon_config
from tests.support.web import WebServer
from tests.test_mcp import call, mcp_session
from tests.test_web_browser import browser


async def one_failed_branch(dsn: str, conn: Any) -> Any:
    """A workflow: fetch -> (render x3) -> pdf, plus a step after a failing one; fetch and the failing step ran."""
    wf = Workflow("report")
    fetch = wf.add("fetch", name="fetch")
    pages = wf.group(*(JobSpec("render", {"page": n}) for n in range(3)), after=fetch)
    wf.add("pdf", after=pages, name="pdf")
    broken = wf.add("broken", name="broken")
    wf.add("render", after=broken, name="never")
    run = await Client(conn).enqueue_workflow(wf)
    backend = await PostgresBackend.open(dsn)

    async def fail(_job: Any) -> None:
        raise RuntimeError("the source is gone")

    try:
        entrypoints = [Entrypoint("fetch", lambda job: {"rows": 3}, store_result=True),
                       Entrypoint("broken", fail, retry=RetryPolicy(max_attempts=1))]  # fmt: skip
        await Worker(backend, entrypoints, WorkerSettings(poll_interval=0.2)).run(drain=True)
    finally:
        await backend.close()
    return run


async def test_the_workflow_reads_lay_steps_out_by_layer_with_their_states(db_dsn: str, conn: Any) -> None:
    run = await one_failed_branch(db_dsn, conn)
    view = await WorkflowReads(conn, PostgresBackend(conn).names).workflow(run.id)
    assert view is not None
    depths = {laid.step.step: laid.depth for laid in layered(view)}
    assert depths == {"fetch": 0, "render-2": 1, "render-3": 1, "render-4": 1, "pdf": 2, "broken": 0, "never": 1}
    assert view.counts() == {"successful": 1, "queued": 3, "waiting": 1, "exception": 1, "canceled": 1}


async def test_pgqd_jobs_show_prints_parents_children_and_the_workflow_tree(db_dsn: str, conn: Any) -> None:
    run = await one_failed_branch(db_dsn, conn)
    shown = run_pgqd("jobs", "show", str(run["render-2"]), "--dsn", db_dsn)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"job {run['render-2']} render [queued] attempts 0"
    assert f"  {run['fetch']} fetch fetch [successful]" in lines
    assert f"  {run['pdf']} pdf pdf [waiting]" in lines
    assert any(line.startswith(f"workflow {run.id} report: 7 steps") for line in lines)
    assert f"      {run['pdf']} pdf [waiting]  after {run['render-2']}, {run['render-3']}, {run['render-4']}" in lines
    as_json = run_pgqd("jobs", "show", str(run["never"]), "--dsn", db_dsn, "--json")
    document = json.loads(as_json.stdout)
    assert document["status"] == "canceled"
    assert document["error"]["message"] == f"parent job {run['broken']} ended exception"
    assert document["workflow"]["counts"]["canceled"] == 1


async def test_the_mcp_tool_reads_a_workflow_by_its_id_or_a_jobs(db_dsn: str, conn: Any, tmp_path: Path) -> None:
    run = await one_failed_branch(db_dsn, conn)
    async with mcp_session(db_dsn, tmp_path) as session:
        by_job = await call(session, "workflow", job_id=run["pdf"])
        by_id = await call(session, "workflow", workflow_id=run.id)
    assert [p["id"] for p in by_job["job"]["parents"]] == [run["render-2"], run["render-3"], run["render-4"]]
    assert by_job["workflow"] == by_id["workflow"]
    assert by_id["workflow"]["counts"] == {"successful": 1, "queued": 3, "waiting": 1, "exception": 1, "canceled": 1}
    assert [s["depth"] for s in by_id["workflow"]["steps"]] == [0, 1, 1, 1, 2, 0, 1]


pytest.importorskip("playwright.async_api")
__all__ = ["browser"]  # the session's Chromium, shared with the other browser tests


@pytest.fixture
def web(tmp_path: Path, db_dsn: str) -> Iterator[WebServer]:
    config = tmp_path / "web.toml"
    config.write_text(daemon_config(processes=1))
    server = WebServer(config, db_dsn).start()
    yield server
    server.stop()


async def test_the_job_page_links_parents_children_and_the_workflow_page_shows_every_step(
    browser: Any, web: WebServer, db_dsn: str, conn: Any
) -> None:
    run = await one_failed_branch(db_dsn, conn)
    context = await browser.new_context()
    page = await context.new_page()
    page.set_default_timeout(15_000)
    try:
        await page.goto(f"{web.url}/jobs/{run['pdf']}")
        links = page.locator("#links")
        assert "workflow " + str(run.id) in await links.locator("h2").inner_text()
        parents = links.locator("table").first.locator("tr")
        assert await parents.count() == 3
        assert "queued" in await parents.first.inner_text()
        await links.locator("h2 a").click()
        await page.wait_for_url(f"{web.url}/workflows/{run.id}")
        rows = page.locator("#steps tbody tr")
        assert await rows.count() == 7
        pdf_row = page.locator(f'#steps tbody tr:has(a[href="/jobs/{run["pdf"]}"]) >> nth=0')
        assert await pdf_row.get_attribute("data-depth") == "2"
        assert "waiting" in await pdf_row.inner_text()
        never = page.locator("#steps tbody tr").nth(6)
        assert "canceled" in await never.inner_text()
        await page.goto(f"{web.url}/workflows/987654321")
        assert "There is no workflow 987654321" in await page.locator("main").inner_text()
    finally:
        await context.close()
