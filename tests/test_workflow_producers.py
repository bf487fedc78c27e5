"""Every producer target enqueues jobs that wait for others and whole workflows, inside the caller's
transaction, with the same statements as asyncpg."""

from __future__ import annotations

from typing import Any

from pgqd import Client, JobSpec, SyncClient, Workflow
from tests.test_producer_targets import async_targets, sync_targets

__all__ = ["async_targets", "sync_targets"]  # fixtures


def chain() -> Workflow:
    wf = Workflow("three")
    wf.chain("a", "b", "c")
    return wf


def test_every_blocking_target_enqueues_dependents_and_workflows(sync_targets: dict[str, Any]) -> None:
    for label, target in sync_targets.items():
        client = SyncClient(target)
        parent = client.enqueue("p")
        assert parent is not None
        child = client.enqueue("c", after=[parent], on_parent_failure="run")
        assert child is not None
        mapped = client.enqueue_many([{"entrypoint": "m", "after": [parent]}, JobSpec("plain")])
        run = client.enqueue_workflow(chain())
        states = client.status([child, *mapped, *run.ids])  # type: ignore[list-item]
        assert [states[i].status for i in (child, *mapped)] == ["waiting", "waiting", "queued"], label
        assert [states[i].status for i in run.ids] == ["queued", "waiting", "waiting"], label
        view = client.workflow(run.id)
        assert view is not None
        assert [s.parents for s in view.steps] == [[], [run.ids[0]], [run.ids[1]]], label
        assert [c.id for c in client.links(parent).children] == [child, mapped[0]], label
        assert sorted(client.cancel_workflow(run.id).canceled) == run.ids, label


async def test_every_async_target_enqueues_dependents_and_workflows(async_targets: dict[str, Any]) -> None:
    for label, target in async_targets.items():
        client = Client(target)
        parent = await client.enqueue("p")
        assert parent is not None
        child = await client.enqueue("c", after=[parent])
        assert child is not None
        run = await client.enqueue_workflow(chain())
        states = await client.status([child, *run.ids])
        assert [states[i].status for i in (child, *run.ids)] == ["waiting", "queued", "waiting", "waiting"], label
        assert [p.id for p in (await client.links(child)).parents] == [parent], label
