"""A million jobs waiting for their parents cost the claim nothing: it reads the same index pages, in the same
plan, as with none (the plans are read through auto_explain, as tests/test_claim_plan.py does)."""

from __future__ import annotations

import os
from typing import Any

from pgqd import PostgresBackend
from pgqd.models import EntrypointLimit, WorkerInfo
from tests.support.waiting import wait_until
from tests.test_claim_plan import explaining, scans, summary

WAITING = int(os.environ.get("PGQD_TEST_WAITING_JOBS", "1000000"))
READY = 40


async def test_a_million_waiting_jobs_of_the_same_entrypoint_add_nothing_to_the_claim(conn: Any) -> None:
    # The hardest case: the waiting jobs belong to the very entrypoint being claimed.
    await conn.execute(
        "INSERT INTO pgqd_jobs (entrypoint, status, waiting_on)"
        " SELECT 'target', 'waiting', 1 FROM generate_series(1, $1)",
        WAITING,
    )
    await conn.execute("INSERT INTO pgqd_jobs (entrypoint) SELECT 'target' FROM generate_series(1, $1)", READY)
    await conn.execute("ANALYZE pgqd_jobs")
    backend = PostgresBackend(conn)
    worker_id = await backend.register_worker(WorkerInfo("plan-test", os.getpid(), ("target",)))
    explained = await explaining(conn, "SET auto_explain.log_buffers = on")

    async def call_logged() -> bool:
        return bool(explained.statements("pgqd_claim_jobs"))

    pages: list[int] = []
    for limit in (EntrypointLimit("target"), EntrypointLimit("target", concurrency=100)):
        for mode in ("force_custom_plan", "force_generic_plan"):
            await conn.execute(f"SET plan_cache_mode = {mode}")
            explained.plans.clear()
            claimed = await backend.claim(worker_id, 10, [limit])
            assert len(claimed.jobs) == 10
            await wait_until(call_logged, timeout=5, what="the plan of the claim call")
            plans = explained.touching("pgqd_jobs")
            evidence = summary(plans)
            for plan in plans:
                assert "Seq Scan" not in {node for node, _ in scans(plan)}, evidence
                assert not {index for _, index in scans(plan)} & {"pgqd_jobs_waiting_idx"}, evidence
            call = explained.statements("pgqd_claim_jobs")[-1]
            pages.append(sum(n.get("Shared Hit Blocks", 0) + n.get("Shared Read Blocks", 0) for n in [call["Plan"]]))
            assert all(job.entrypoint == "target" for job in claimed.jobs)
    # Ten jobs claimed touch a few dozen pages (index descents, the rows, the limit row): nothing scales with
    # the million waiting rows, which would take thousands of pages to read.
    assert max(pages) < 400, pages
    assert await conn.fetchval("SELECT count(*) FROM pgqd_jobs WHERE status = 'waiting'") == WAITING
