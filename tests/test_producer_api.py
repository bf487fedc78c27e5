"""The producer API means the same on every target, sync or async: ids in input order, dedupe modes, status,
wait, cancel, delete and requeue. Each test body runs against both clients (``call`` awaits what needs it)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from pgqd import DedupeConflict, JobNotFound, JobSpec
from tests.support.daemon import Daemon
from tests.support.producers import AUTOCOMMIT, call, idle_daemon, queue_db, queue_dsn

__all__ = ["idle_daemon", "queue_db", "queue_dsn"]  # fixtures

pytestmark = pytest.mark.slow


@pytest.fixture(params=sorted(AUTOCOMMIT))
async def producer(request: pytest.FixtureRequest, queue_dsn: str) -> AsyncIterator[Any]:
    async with AUTOCOMMIT[request.param](queue_dsn) as client:
        yield client


def unique() -> str:
    """A name no earlier test used: the queue database is shared by the module's tests, and ``id()`` of a
    producer can come back for a later one."""
    return uuid.uuid4().hex[:12]


async def test_ids_come_back_in_input_order(producer: Any, queue_db: Any) -> None:
    token = unique()
    uniform = [JobSpec("order", {"n": n}) for n in range(60)]
    mixed = [
        JobSpec(f"order{n % 3}", {"n": n}, priority=n % 4, headers={"n": n} if n % 2 else None,
                dedupe_key=f"order-{n}-{token}" if n % 5 == 0 else None)
        for n in range(60)
    ]  # fmt: skip
    for specs in (uniform, mixed):
        ids = await call(producer.enqueue_many(specs))
        assert len(set(ids)) == len(specs)
        rows = await queue_db.fetch("SELECT id, payload FROM pgqd_jobs WHERE id = ANY($1::bigint[])", ids)
        payload_of = {row["id"]: json.loads(row["payload"]) for row in rows}
        assert [payload_of[job_id]["n"] for job_id in ids] == list(range(len(specs)))
    assert await call(producer.enqueue_many([])) == []
    assert await call(producer.status([])) == {}


async def test_a_batch_of_alike_jobs_without_payloads_gets_one_new_job_per_input(producer: Any, queue_db: Any) -> None:
    entrypoint = f"bare-{unique()}"
    ids = await call(producer.enqueue_many([JobSpec(entrypoint, priority=2) for _ in range(60)]))
    assert len(set(ids)) == 60
    rows = await queue_db.fetch(
        "SELECT entrypoint, priority, payload, status::text FROM pgqd_jobs WHERE id = ANY($1::bigint[])", ids
    )
    assert [tuple(row) for row in rows] == [(entrypoint, 2, None, "queued")] * 60


async def test_dedupe_modes(producer: Any, queue_db: Any) -> None:
    key = f"dedupe-{unique()}"
    first = await call(producer.enqueue("dedupe", priority=1, dedupe_key=key, execute_after=timedelta(hours=1)))
    with pytest.raises(DedupeConflict) as raised:
        await call(producer.enqueue_many([JobSpec("dedupe", b"new"), JobSpec("dedupe", dedupe_key=key)]))
    assert raised.value.keys == (key,)
    assert await queue_db.fetchval("SELECT count(*) FROM pgqd_jobs WHERE payload = 'new'") == 0
    assert await call(producer.enqueue("dedupe", dedupe_key=key, on_conflict="skip")) is None
    again = await call(producer.enqueue("dedupe", priority=9, dedupe_key=key, on_conflict="raise_priority"))
    assert again == first
    assert (await call(producer.status(first)))[first].priority == 9


async def test_status_cancel_delete_and_requeue(producer: Any, queue_db: Any) -> None:
    later = timedelta(hours=1)
    waiting, doomed, held = await call(producer.enqueue_many([JobSpec("ops", execute_after=later)] * 3))
    assert (await call(producer.status(waiting)))[waiting].status == "deferred"

    canceled = await call(producer.cancel([waiting, 999_999_999]))
    assert canceled.canceled == [waiting]
    assert (await call(producer.delete(doomed))).canceled == [doomed]
    states = await call(producer.status([waiting, doomed, 999_999_999]))
    assert {job_id: state.status for job_id, state in states.items()} == {waiting: "canceled", doomed: "deleted"}
    assert states[waiting].finished

    await queue_db.execute("UPDATE pgqd_jobs SET status = 'failed', attempts = 3 WHERE id = $1", held)
    assert await call(producer.requeue([held, waiting])) == [held]
    state = (await call(producer.status(held)))[held]
    assert (state.status, state.attempts) == ("queued", 0)
    await call(producer.cancel(held))


async def test_wait_returns_the_final_state(producer: Any, idle_daemon: Daemon) -> None:
    done, held, measured = await call(
        producer.enqueue_many([JobSpec("sleeper", "0.05"), JobSpec("held"), JobSpec("measured", b"abc")])
    )
    assert (await call(producer.wait(done, timeout=10))).status == "successful"
    failed = await call(producer.wait(held, timeout=10))
    assert failed.status == "failed"
    assert failed.error is not None
    assert failed.error.type == "KeyboardInterrupt"
    assert (await call(producer.wait(measured, timeout=10))).result["bytes"] == 3

    nobody = await call(producer.enqueue("nobody-serves-this"))
    with pytest.raises(TimeoutError, match=f"job {nobody} did not finish within 0.2s"):
        await call(producer.wait(nobody, timeout=0.2))
    with pytest.raises(JobNotFound):
        await call(producer.wait(999_999_999, timeout=1))
    await call(producer.cancel(nobody))
