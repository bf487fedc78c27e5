"""The claim on a big table: it reads the pgqd indexes, never scans the jobs table, and stays exact under races.

``pgqd_claim_jobs`` is a plpgsql function, so ``EXPLAIN`` of the call would show a bare function scan. The
``auto_explain`` module, with nested statements on, logs the real plan of every statement inside it; the session
asks for those log lines on the client connection.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from pgqd import PostgresBackend
from pgqd.backend import ready_scan
from pgqd.models import ClaimResult, EntrypointLimit, WorkerInfo
from tests.support.waiting import wait_until

AUTO_EXPLAIN = (
    "LOAD 'auto_explain'",
    "SET auto_explain.log_min_duration = 0",
    "SET auto_explain.log_nested_statements = on",
    "SET auto_explain.log_format = 'json'",
    "SET client_min_messages = log",
)

BIG = 100_000
# Equal priorities keep FIFO order; the claim must take the highest first.
TARGET_PRIORITIES = (0, 3, 1, 3, 0, 2, 1, 3)


class ExplainedStatements:
    """Collects the JSON plans auto_explain logs for every statement run on a connection, nested ones included."""

    def __init__(self, conn: Any) -> None:
        self.plans: list[dict[str, Any]] = []
        conn.add_log_listener(self._on_message)

    def _on_message(self, _conn: Any, message: Any) -> None:
        text: str = message.message
        if "plan:" in text and "{" in text:
            self.plans.append(json.loads(text[text.index("{") :]))

    def statements(self, text: str) -> list[dict[str, Any]]:
        return [plan for plan in self.plans if text in plan["Query Text"]]

    async def wait_for_claim_call(self) -> None:
        """Until the plan of a claim call is logged: the call's own plan comes last, once every statement inside it
        has run."""

        async def logged() -> bool:
            return bool(self.statements("pgqd_claim_jobs"))

        await wait_until(logged, timeout=5, what="the plan of the claim call")

    def touching(self, relation: str) -> list[dict[str, Any]]:
        return [plan for plan in self.plans if any(n.get("Relation Name") == relation for n in nodes(plan["Plan"]))]


async def explaining(conn: Any, *settings: str) -> ExplainedStatements:
    """Turns auto_explain on for the connection (with ``settings`` added) and collects its plans."""
    explained = ExplainedStatements(conn)
    try:
        await conn.execute(AUTO_EXPLAIN[0])
    except asyncpg.UndefinedFileError:
        # The embedded server's wheel ships without contrib modules; CI runs this against the local server.
        if os.environ.get("CI"):
            raise
        pytest.skip("auto_explain is not installed on this PostgreSQL server")
    for statement in (*AUTO_EXPLAIN[1:], *settings):
        await conn.execute(statement)
    return explained


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from nodes(child)


def scans(plan: dict[str, Any], relation: str = "pgqd_jobs") -> list[tuple[str, str | None]]:
    """(node type, index name) of every node reading ``relation``."""
    return [(n["Node Type"], n.get("Index Name")) for n in nodes(plan["Plan"]) if n.get("Relation Name") == relation]


def indexes(plan: dict[str, Any]) -> set[str]:
    return {index for _, index in scans(plan) if index is not None}


def summary(plans: list[dict[str, Any]]) -> str:
    return "\n".join(f"{' '.join(p['Query Text'].split())[:70]!r}: {scans(p)}" for p in plans)


async def test_claim_reads_the_pgqd_indexes_and_never_scans_the_jobs_table(conn: Any) -> None:
    await conn.execute(
        """
        INSERT INTO pgqd_jobs (entrypoint, status, execute_after)
        SELECT 'target', 'deferred', now() + interval '1 hour' + g * interval '1 millisecond'
        FROM generate_series(1, $1) AS g
        """,
        BIG,
    )
    await conn.execute(
        "INSERT INTO pgqd_jobs (entrypoint, status) SELECT 'other', 'queued' FROM generate_series(1, $1)", BIG
    )
    rows = await conn.fetch(
        """
        INSERT INTO pgqd_jobs (entrypoint, status, priority)
        SELECT 'target', 'queued', p FROM unnest($1::integer[]) AS p
        RETURNING id, priority
        """,
        list(TARGET_PRIORITIES),
    )
    due_first = await conn.fetch("SELECT id FROM pgqd_jobs WHERE status = 'deferred' ORDER BY execute_after LIMIT 4")
    await conn.execute("ANALYZE pgqd_jobs")

    backend = PostgresBackend(conn)
    worker_id = await backend.register_worker(WorkerInfo("plan-test", os.getpid(), ("target",)))
    explained = await explaining(conn)
    plans: list[dict[str, Any]] = []

    async def claim(limit: EntrypointLimit, mode: str) -> ClaimResult:
        await conn.execute(f"SET plan_cache_mode = {mode}")
        explained.plans.clear()
        result = await backend.claim(worker_id, 2, [limit])
        await explained.wait_for_claim_call()
        plans.extend(explained.touching("pgqd_jobs"))
        return result

    unlimited = EntrypointLimit("target")
    limited = EntrypointLimit("target", concurrency=100, rate_per_second=1000.0, burst=1000.0)
    # Both the plans plpgsql makes for one call (custom) and the ones it caches after a few calls (generic).
    variants = list(itertools.product((unlimited, limited), ("force_custom_plan", "force_generic_plan")))

    claimed: list[int] = []
    for limit, mode in variants:
        claimed += [job.id for job in (await claim(limit, mode)).jobs]
    assert claimed == [row["id"] for row in sorted(rows, key=lambda row: (-row["priority"], row["id"]))]

    for limit, mode in variants:
        idle = await claim(limit, mode)
        assert idle.jobs == []
        assert idle.due_in is not None
        assert 3500 < idle.due_in <= 3601

    for (due,), (limit, mode) in zip(due_first, variants, strict=True):
        await conn.execute("UPDATE pgqd_jobs SET execute_after = now() - interval '1 second' WHERE id = $1", due)
        assert [job.id for job in (await claim(limit, mode)).jobs] == [due]
    assert await conn.fetchval("SELECT count(*) FROM pgqd_jobs WHERE status = 'picked' AND entrypoint = 'other'") == 0
    assert await conn.fetchval("SELECT count(*) FROM pgqd_jobs WHERE status = 'deferred'") == BIG - len(variants)

    evidence = summary(plans)
    for plan in plans:
        assert "Seq Scan" not in {node for node, _ in scans(plan)}, evidence
        for node in nodes(plan["Plan"]):
            if node.get("Index Name") in ("pgqd_jobs_ready_idx", "pgqd_jobs_deferred_idx"):
                # The entrypoint bounds the index range: other entrypoints' rows are never read.
                assert "entrypoint" in node.get("Index Cond", ""), evidence
            if node.get("Index Name") == "pgqd_jobs_deferred_idx":
                # And the time bounds it too: jobs not due are never read one by one.
                assert "execute_after" in node.get("Index Cond", ""), evidence
    candidates = [p for p in plans if "candidates AS" in p["Query Text"]]
    # One claim per call, and another when a read from the last claim's start came back short (migration 0017).
    assert len(candidates) >= 3 * len(variants), evidence
    for plan in candidates:
        assert {"pgqd_jobs_ready_idx", "pgqd_jobs_deferred_idx"} <= indexes(plan), evidence

    def from_a_start(plan: dict[str, Any]) -> bool:
        ready = (n for n in nodes(plan["Plan"]) if n.get("Index Name") == "pgqd_jobs_ready_idx")
        conditions = [n.get("Index Cond", "") for n in ready]
        return any("priority <=" in cond and "id >=" in cond for cond in conditions)

    # Claims after a full one read from where it started, bounded in the index: the entries before it are not read.
    assert any(from_a_start(plan) for plan in candidates), evidence
    counts = [p for p in plans if "GREATEST(u.conc - (" in p["Query Text"]]
    assert counts, evidence
    for plan in counts:
        running = [node for node in nodes(plan["Plan"]) if node.get("Index Name") == "pgqd_jobs_picked_idx"]
        for node in running:
            # The running jobs of the limited entrypoint alone are read, not every job running in the fleet.
            assert "entrypoint" in node.get("Index Cond", ""), evidence
    assert any(node.get("Index Name") == "pgqd_jobs_picked_idx" for p in counts for node in nodes(p["Plan"]))
    # What a claim took of a limited entrypoint is counted among its own worker's running jobs alone.
    taken = [p for p in plans if "j.picked_at = v_now" in p["Query Text"]]
    assert taken, evidence
    for plan in taken:
        own = [node for node in nodes(plan["Plan"]) if node.get("Index Name") == "pgqd_jobs_picked_idx"]
        assert own, evidence
        assert all("worker_id" in node.get("Index Cond", "") for node in own), evidence
    next_due = [p for p in plans if "min(n.execute_after)" in p["Query Text"]]
    assert next_due, evidence
    for plan in next_due:
        assert "pgqd_jobs_deferred_idx" in indexes(plan), evidence


async def test_claims_from_the_starts_of_several_entrypoints_read_each_from_its_start(
    conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The shares of the batch are counted on the same bounded reads as the jobs are then locked (migration 0019):
    # neither reads another entrypoint's rows, nor the entries before a start.
    monkeypatch.setattr(ready_scan, "WHOLE_READ_EVERY", 3600.0)  # every claim after the first reads from its starts
    await conn.execute(
        "INSERT INTO pgqd_jobs (entrypoint, status) SELECT 'other', 'queued' FROM generate_series(1, $1)", BIG
    )
    await conn.execute(
        "INSERT INTO pgqd_jobs (entrypoint) SELECT (ARRAY['a', 'b', 'c'])[1 + g % 3] FROM generate_series(1, 1000) AS g"
    )
    await conn.execute("ANALYZE pgqd_jobs")
    backend = PostgresBackend(conn)
    worker_id = await backend.register_worker(WorkerInfo("plan-test", os.getpid(), ("a", "b", "c")))
    explained = await explaining(conn)
    limits = [EntrypointLimit(name) for name in "abc"]
    plans: list[dict[str, Any]] = []
    for mode in ("force_custom_plan", "force_custom_plan", "force_generic_plan", "force_generic_plan"):
        await conn.execute(f"SET plan_cache_mode = {mode}")
        explained.plans.clear()
        assert len((await backend.claim(worker_id, 100, limits)).jobs) == 100
        await explained.wait_for_claim_call()
        plans += explained.statements("shares AS")
    evidence = summary(plans)
    # The first claim reads everything; the three after it start where it did, and count the shares of their batch
    # of 100, as the two entrypoints beyond the first would lock 200 rows more than it.
    assert len(plans) == 3, evidence
    for plan in plans:
        assert "Seq Scan" not in {node for node, _ in scans(plan)}, evidence
        ready = [n for n in nodes(plan["Plan"]) if n.get("Index Name") == "pgqd_jobs_ready_idx"]
        assert len(ready) == 2, evidence  # the count of the shares, and the locking read
        for node in ready:
            condition = node.get("Index Cond", "")
            for bound in ("entrypoint", "priority <=", "id >="):
                assert bound in condition, evidence


async def test_the_claims_generic_plan_finds_its_rows_by_place_whatever_it_guesses(conn: Any) -> None:
    # A worker's connections use generic plans, which guess a tenth of the rows for LIMIT p_batch. With the claimed
    # rows joined to the candidates, that guess made a draft of the claim hash the whole table on every call of a
    # drain of 60,000 queued jobs of one entrypoint: 2 ms per claim of 10.
    await conn.execute(
        "INSERT INTO pgqd_jobs (entrypoint, status) SELECT 'target', 'queued' FROM generate_series(1, 60000)"
    )
    await conn.execute("VACUUM ANALYZE pgqd_jobs")
    backend = PostgresBackend(conn)
    worker_id = await backend.register_worker(WorkerInfo("plan-test", os.getpid(), ("target",)))
    await conn.execute("SET plan_cache_mode = force_generic_plan")
    explained = await explaining(conn)
    unlimited = EntrypointLimit("target")
    limited = EntrypointLimit("target", concurrency=1000)
    for limit in (unlimited, limited, unlimited, limited):
        explained.plans.clear()
        claimed = await backend.claim(worker_id, 10, [limit])
        assert len(claimed.jobs) == 10
        assert [job.id for job in claimed.jobs] == sorted(job.id for job in claimed.jobs)
        await explained.wait_for_claim_call()
        updates = [p for p in explained.touching("pgqd_jobs") if "claimed AS" in p["Query Text"]]
        assert updates, summary(explained.plans)
        for plan in updates:
            assert "Seq Scan" not in {node for node, _ in scans(plan)}, summary(updates)
            assert "Tid Scan" in {node for node, _ in scans(plan)}, summary(updates)


async def test_only_the_claims_own_commit_skips_the_wait_for_the_disk(conn: Any) -> None:
    backend = PostgresBackend(conn)
    worker = await backend.register_worker(WorkerInfo("host", 1, ("durable",)))
    await conn.execute("INSERT INTO pgqd_jobs (entrypoint) SELECT 'durable' FROM generate_series(1, 3)")
    await conn.execute("SET synchronous_commit = on")
    async with conn.transaction():
        claimed = await backend.claim(worker, 2, [EntrypointLimit("durable")])
        assert await conn.fetchval("SHOW synchronous_commit") == "off"
    assert len(claimed.jobs) == 2
    # Set for the claim's transaction alone: the outcome written next on this connection waits for the disk.
    assert await conn.fetchval("SHOW synchronous_commit") == "on"
    await backend.claim(worker, 2, [EntrypointLimit("durable")])
    assert await conn.fetchval("SHOW synchronous_commit") == "on"


RACE_JOBS = 2000
CLAIMERS = 8


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        (EntrypointLimit("race"), RACE_JOBS),
        (EntrypointLimit("race", concurrency=37), 37),
        (EntrypointLimit("race", rate_per_second=0.001, burst=50.0), 50),
    ],
    ids=["unlimited", "concurrency_limit", "rate_limit"],
)
async def test_concurrent_claimers_take_every_job_exactly_once(
    db_dsn: str, conn: Any, limit: EntrypointLimit, expected: int
) -> None:
    inserted = await conn.fetch(
        "INSERT INTO pgqd_jobs (entrypoint) SELECT 'race' FROM generate_series(1, $1) RETURNING id", RACE_JOBS
    )
    await race(db_dsn, conn, [limit], [row["id"] for row in inserted], expected)


async def test_concurrent_claimers_of_several_entrypoints_take_every_job_exactly_once(db_dsn: str, conn: Any) -> None:
    # Big claims from the starts of several entrypoints count each one's share before they lock (migration 0019):
    # the jobs counted may be held by another claim by then, and are skipped for the next ones.
    inserted = await conn.fetch(
        """INSERT INTO pgqd_jobs (entrypoint) SELECT (ARRAY['race', 'race', 'run', 'rush', 'race', 'run'])[1 + g % 6]
           FROM generate_series(1, $1) AS g RETURNING id""",
        3 * RACE_JOBS,
    )
    limits = [EntrypointLimit(name) for name in ("race", "run", "rush")]
    await race(db_dsn, conn, limits, [row["id"] for row in inserted], 3 * RACE_JOBS, batch=100)


async def race(
    db_dsn: str, conn: Any, limits: list[EntrypointLimit], inserted: list[int], expected: int, batch: int = 10
) -> None:
    """``CLAIMERS`` workers claim batches of ``limits`` at once until none is left; each job is taken once."""
    connections = [await asyncpg.connect(db_dsn) for _ in range(CLAIMERS)]
    names = tuple(limit.name for limit in limits)
    try:
        backends = [PostgresBackend(connection) for connection in connections]
        worker_ids = [await b.register_worker(WorkerInfo("race", os.getpid(), names)) for b in backends]
        go = asyncio.Event()

        async def claimer(backend: PostgresBackend, worker_id: int) -> list[int]:
            taken: list[int] = []
            await go.wait()
            while True:
                result = await backend.claim(worker_id, batch, limits)
                if not result.jobs:
                    return taken
                taken += [job.id for job in result.jobs]

        tasks = [asyncio.create_task(claimer(b, w)) for b, w in zip(backends, worker_ids, strict=True)]
        go.set()
        async with asyncio.timeout(30):
            per_claimer = await asyncio.gather(*tasks)
    finally:
        await asyncio.gather(*(connection.close() for connection in connections))

    everything = [job_id for taken in per_claimer for job_id in taken]
    assert len(everything) == len(set(everything)) == expected
    owners = {job_id: worker_id for worker_id, taken in zip(worker_ids, per_claimer, strict=True) for job_id in taken}
    rows = await conn.fetch("SELECT id, worker_id FROM pgqd_jobs WHERE status = 'picked'")
    assert {row["id"]: row["worker_id"] for row in rows} == owners
    if expected == len(inserted):
        assert set(everything) == set(inserted)
        assert sum(1 for taken in per_claimer if taken) > 1, "the claimers did not actually race"
