"""Workflows (jobs that wait for other jobs), proven on both storage backends through the ``backend`` fixture:
release, results along the edges, failure policies, cancelling, and outcomes that arrive late."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from pgqd import Client, Context, Entrypoint, Job, JobSpec, RetryPolicy, Worker, Workflow
from pgqd.backend.base import Backend
from pgqd.errors import PgqdError, UnknownParents
from pgqd.models import EntrypointLimit, Finished, WorkerInfo
from tests.support.engine import drain, fast_settings


class Recorder:
    """Handlers that record the order jobs ran in and what their parents handed them."""

    def __init__(self) -> None:
        self.ran: list[int] = []
        self.seen: dict[int, dict[Any, Any]] = {}

    async def step(self, job: Job, ctx: Context) -> Any:
        self.ran.append(job.id)
        self.seen[job.id] = await ctx.parent_results()
        payload = job.json()
        if payload and payload.get("fail"):
            raise RuntimeError(f"step {job.id} failed on purpose")
        return payload.get("value") if payload else None

    def worker(self, backend: Backend, **entrypoint: Any) -> Worker:
        entrypoints = [
            Entrypoint("step", self.step, store_result=True, **entrypoint),
            Entrypoint("quiet", self.step, store_result=False),
            Entrypoint("held", self.step, on_failure="hold", retry=RetryPolicy(max_attempts=1)),
        ]
        return Worker(backend, entrypoints, fast_settings())


async def status(client: Client, job_id: int) -> str:
    return (await client.status(job_id))[job_id].status


async def test_a_chain_runs_each_step_after_the_one_before_and_hands_it_the_result(
    backend: Backend, client: Client
) -> None:
    recorder = Recorder()
    wf = Workflow("chain")
    a, b, c = wf.chain(JobSpec("step", {"value": 1}), JobSpec("quiet", {"value": 2}), JobSpec("step", {"value": 3}))
    run = await client.enqueue_workflow(wf)
    assert [await status(client, i) for i in run.ids] == ["queued", "waiting", "waiting"]

    await drain(recorder.worker(backend))

    assert recorder.ran == run.ids
    assert recorder.seen[run.ids[0]] == {}
    assert recorder.seen[run.ids[1]] == {run.ids[0]: 1, a.name: 1}
    # The middle entrypoint does not store results, yet its child gets its result (and its log keeps it).
    assert recorder.seen[run.ids[2]] == {run.ids[1]: 2, b.name: 2}
    assert (await client.status(run[b.name]))[run[b.name]].result == 2
    view = await client.workflow(run.id)
    assert view is not None
    assert view.name == "chain"
    assert view.ended
    assert [s.parents for s in view.steps] == [[], [run.ids[0]], [run.ids[1]]]
    assert view.counts() == {"successful": 3}
    assert c.name == "step-3"


async def test_a_chord_callback_runs_once_every_member_succeeded_and_reads_all_their_results(
    backend: Backend, client: Client
) -> None:
    recorder = Recorder()
    wf = Workflow()
    members = [JobSpec("step", {"value": n * n}) for n in range(20)]
    callback = wf.chord(members, JobSpec("step"))
    run = await client.enqueue_workflow(wf)

    await drain(recorder.worker(backend))

    callback_id = run[callback.name]
    assert recorder.ran[-1] == callback_id
    results = recorder.seen[callback_id]
    assert sorted(v for k, v in results.items() if isinstance(k, int)) == sorted(n * n for n in range(20))
    assert results["step-5"] == 16


async def test_after_names_existing_jobs_waiting_ones_finished_ones_and_honours_execute_after(
    backend: Backend, client: Client
) -> None:
    recorder = Recorder()
    done = await client.enqueue("step", {"value": "early"})
    assert done is not None
    await drain(recorder.worker(backend))
    live = await client.enqueue("step", {"value": "late"})
    assert live is not None
    child, later = await client.enqueue_many(
        [
            JobSpec("step", after=[done, live]),
            JobSpec("step", after=[live], execute_after=timedelta(hours=1)),
        ]
    )
    assert child is not None
    assert later is not None
    assert await status(client, child) == "waiting"

    await drain(recorder.worker(backend))

    assert recorder.ran[-2:] == [live, child]
    assert recorder.seen[child] == {done: "early", live: "late"}
    assert await status(client, later) == "deferred", "a released job still waits for its own execute_after"
    with pytest.raises(UnknownParents):
        await client.enqueue("step", after=[10_000_000])
    with pytest.raises(PgqdError):
        await client.enqueue("step", after=[live], on_conflict="skip")


async def test_a_failed_parent_cancels_its_dependents_transitively_naming_the_parent(
    backend: Backend, client: Client
) -> None:
    recorder = Recorder()
    wf = Workflow()
    bad = wf.add("step", {"fail": True}, name="bad")
    middle = wf.add("step", after=bad, name="middle")
    wf.add("step", after=middle, name="last")
    runner = wf.add("step", after=bad, name="runner", on_parent_failure="run")
    wf.add("step", after=[bad, runner], name="holder", on_parent_failure="hold")
    run = await client.enqueue_workflow(wf)

    await drain(recorder.worker(backend))

    states = await client.status(run.ids)
    assert states[run["bad"]].status == "exception"
    assert states[run["middle"]].status == "canceled"
    error = states[run["middle"]].error
    assert error is not None
    assert error.type == "pgqd.ParentFailed"
    assert error.message == f"parent job {run['bad']} ended exception"
    assert states[run["last"]].status == "canceled"
    assert states[run["last"]].error is not None
    assert states[run["last"]].error.message == f"parent job {run['middle']} ended canceled"
    assert states[run["runner"]].status == "successful"
    assert states[run["holder"]].status == "failed", "hold keeps the dependent for an operator"
    assert run["middle"] not in recorder.ran
    assert run["last"] not in recorder.ran

    assert await client.requeue(run["holder"]) == [run["holder"]]
    await drain(recorder.worker(backend))
    assert await status(client, run["holder"]) == "successful"


async def test_a_held_parent_keeps_its_dependents_waiting_until_requeued_and_successful(
    backend: Backend, client: Client
) -> None:
    recorder = Recorder()
    parent = await client.enqueue("held", {"fail": True})
    assert parent is not None
    child = await client.enqueue("step", after=[parent])
    assert child is not None

    await drain(recorder.worker(backend))
    assert await status(client, parent) == "failed"
    assert await status(client, child) == "waiting"

    # The operator fixes the cause (here: a handler that succeeds) and requeues the parent.
    fixed = Worker(backend, [Entrypoint("held", lambda job: None), Entrypoint("step", recorder.step)], fast_settings())
    assert await client.requeue(parent) == [parent]
    await drain(fixed)

    assert await status(client, parent) == "successful"
    assert await status(client, child) == "successful"


async def test_cancelling_or_deleting_a_parent_settles_its_dependents_and_a_workflow_cancels_whole(
    backend: Backend, client: Client
) -> None:
    parent = await client.enqueue("step")
    assert parent is not None
    canceled_child = await client.enqueue("step", after=[parent])
    running_child = await client.enqueue("step", after=[parent], on_parent_failure="run")
    assert canceled_child is not None
    assert running_child is not None
    await client.delete(parent)
    assert await status(client, canceled_child) == "canceled"
    assert await status(client, running_child) == "queued"

    wf = Workflow()
    wf.chain("step", "step", "step")
    run = await client.enqueue_workflow(wf)
    result = await client.cancel_workflow(run.id)
    assert sorted(result.canceled) == sorted(run.ids)
    view = await client.workflow(run.id)
    assert view is not None
    assert view.counts() == {"canceled": 3}
    links = await client.links(run.ids[1])
    assert links.workflow_id == run.id
    assert [p.id for p in links.parents] == [run.ids[0]]
    assert [(c.id, c.status) for c in links.children] == [(run.ids[2], "canceled")]


async def test_a_late_outcome_of_a_worker_presumed_dead_never_releases_a_dependent(backend: Backend) -> None:
    client = Client(backend)
    first, second = await client.enqueue_many([JobSpec("step"), JobSpec("step")])
    assert first is not None
    assert second is not None
    child = await client.enqueue("step", after=[first, second])
    assert child is not None
    limits = [EntrypointLimit("step")]
    info = WorkerInfo("host", 1, ["step"])

    dead = await backend.register_worker(info)
    claimed = await backend.claim(dead, 1, limits)
    assert [j.id for j in claimed.jobs] == [first]
    await backend.rescue_worker(dead, "killed by signal 9")
    assert (await backend.record(dead, [Finished(first, "successful")], [])).applied == 0

    alive = await backend.register_worker(info)
    assert {j.id for j in (await backend.claim(alive, 10, limits)).jobs} == {first, second}
    assert (await backend.record(alive, [Finished(first, "successful")], [])).applied == 1
    assert await status(client, child) == "waiting", "one parent of two ended: the child still waits"
    assert (await backend.record(dead, [Finished(second, "successful")], [])).applied == 0
    assert await status(client, child) == "waiting"
    assert (await backend.record(alive, [Finished(second, "successful")], [])).applied == 1
    assert await status(client, child) == "queued"
    assert [j.id for j in (await backend.claim(alive, 10, limits)).jobs] == [child]


async def test_a_waiting_job_is_never_claimed(backend: Backend, client: Client) -> None:
    parent = await client.enqueue("other")
    assert parent is not None
    await client.enqueue_many([JobSpec("step", after=[parent]) for _ in range(5)])
    worker = await backend.register_worker(WorkerInfo("host", 1, ["step"]))
    claimed = await backend.claim(worker, 10, [EntrypointLimit("step")])
    assert claimed.jobs == []


async def test_a_workflow_of_ten_thousand_steps_is_enqueued_in_one_call(backend: Backend, client: Client) -> None:
    wf = Workflow("wide")
    root = wf.add("step", name="root")
    for n in range(9_998):
        wf.add("step", after=root, name=f"leaf-{n}")
    wf.add("step", after=[root], name="tail")
    run = await client.enqueue_workflow(wf)
    assert len(run.ids) == 10_000
    assert len(set(run.ids)) == 10_000
    states = await client.status([run["root"], run["tail"]])
    assert states[run["root"]].status == "queued"
    assert states[run["tail"]].status == "waiting"
    view = await client.workflow(run.id)
    assert view is not None
    assert view.counts() == {"queued": 1, "waiting": 9_999}
