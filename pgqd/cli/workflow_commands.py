"""``pgqd jobs show ID``: one job with its parents, children and workflow (docs/workflows.md)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from pgqd.backend.postgres import PostgresBackend
from pgqd.cli.connect import add_connection_arguments, command_connection, names_from
from pgqd.errors import JobNotFound
from pgqd.ops.workflows import WorkflowReads, linked_line, links_as_dict, workflow_as_dict, workflow_lines


def register_show(actions: Any) -> None:
    show = actions.add_parser(
        "show",
        help="show one job, its parents and children, and its workflow",
        description="Show one job: its state, the jobs it waits for, those waiting for it, and its workflow.",
    )
    add_connection_arguments(show)
    show.add_argument("id", type=int, help="job id")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=show_job)


async def show_job(args: argparse.Namespace) -> int:
    names = names_from(args)
    async with command_connection(args) as conn:
        state = (await PostgresBackend(conn, names).job_states([args.id])).get(args.id)
        if state is None:
            raise JobNotFound(args.id)
        reads = WorkflowReads(conn, names)
        links = await reads.links(args.id)
        view = None if links.workflow_id is None else await reads.workflow(links.workflow_id)
    if args.json:
        document = {
            "id": state.id,
            "entrypoint": state.entrypoint,
            "status": state.status,
            "attempts": state.attempts,
            "error": None if state.error is None else state.error.as_dict(),
            "result": state.result,
            **links_as_dict(links),
            "workflow": None if view is None else workflow_as_dict(view),
        }
        print(json.dumps(document, indent=2, default=str))
        return 0
    print(f"job {state.id} {state.entrypoint} [{state.status}] attempts {state.attempts}")
    if state.error is not None:
        print(f"  error: {state.error.type}: {state.error.message}")
    if state.result is not None:
        print(f"  result: {json.dumps(state.result)}")
    print("waits for:" if links.parents else "waits for: nothing")
    for parent in links.parents:
        print(f"  {linked_line(parent)}")
    print("waited for by:" if links.children else "waited for by: nothing")
    for child in links.children:
        print(f"  {linked_line(child)}")
    if view is not None:
        print("\n".join(workflow_lines(view)))
    return 0
