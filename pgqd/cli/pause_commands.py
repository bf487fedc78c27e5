"""``pgqd pause``, ``pgqd resume`` and ``pgqd paused``: stop and restart claiming of entrypoints fleet-wide."""

from __future__ import annotations

import argparse
import json
from typing import Any

from pgqd.cli.connect import add_connection_arguments, command_connection, names_from
from pgqd.client import Client
from pgqd.errors import ConfigError
from pgqd.identifiers import entrypoint_name_problem
from pgqd.models import PAUSE_ALL, PauseState
from pgqd.ops.action_log import Action, cli_actor, record


def register(commands: Any) -> None:
    for verb, summary, description in (
        (
            "pause",
            "stop every worker from claiming jobs of entrypoints",
            "Stop every worker, on every host, from claiming jobs of the named entrypoints (or of all, with --all, "
            "including entrypoints that have no job yet) until resumed. Running jobs finish; enqueueing still "
            "works. The pause is stored in the database and takes effect within a second.",
        ),
        (
            "resume",
            "let workers claim jobs of paused entrypoints again",
            "Let workers claim jobs of the named entrypoints (or of all, with --all) again; idle workers are woken "
            "at once. Resuming one entrypoint while all are paused exempts it from that pause.",
        ),
    ):
        parser = commands.add_parser(verb, help=summary, description=description)
        add_connection_arguments(parser)
        parser.add_argument("entrypoints", nargs="*", metavar="ENTRYPOINT", help="entrypoint names")
        parser.add_argument("--all", action="store_true", dest="everything", help="every entrypoint")
        parser.set_defaults(handler=change_pauses, verb=verb)

    listing = commands.add_parser(
        "paused", help="show which entrypoints are paused", description="Show which entrypoints are paused."
    )
    add_connection_arguments(listing)
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=show_pauses)


def describe(state: PauseState) -> str:
    if state.all_paused:
        text = "every entrypoint is paused"
        if state.excepted:
            text += f" except {', '.join(sorted(state.excepted))}"
        return text
    if state.paused:
        return f"paused: {', '.join(sorted(state.paused))}"
    return "nothing is paused"


async def change_pauses(args: argparse.Namespace) -> int:
    verb = args.verb
    if args.everything and args.entrypoints:
        raise ConfigError(f"{verb}: name entrypoints or give --all, not both")
    if not args.everything and not args.entrypoints:
        raise ConfigError(f"{verb}: name at least one entrypoint, or give --all for every entrypoint")
    for name in args.entrypoints:
        if name == PAUSE_ALL:
            raise ConfigError(f"{verb}: {PAUSE_ALL!r} is not an entrypoint name: give --all for every entrypoint")
        problem = entrypoint_name_problem(name)
        if problem is not None:
            raise ConfigError(f"{verb}: {problem}")
    names = names_from(args)
    async with command_connection(args) as conn:
        client = Client(conn, schema=names.schema, prefix=names.prefix)
        change = client.pause if verb == "pause" else client.resume
        state = await change(*args.entrypoints, all=args.everything)
        target = "every entrypoint" if args.everything else ", ".join(args.entrypoints)
        count = len(args.entrypoints) or 1
        await record(conn, names, Action(cli_actor(), "cli", verb, target, count, count))
    print(describe(state))
    return 0


async def show_pauses(args: argparse.Namespace) -> int:
    names = names_from(args)
    async with command_connection(args) as conn:
        state = await Client(conn, schema=names.schema, prefix=names.prefix).paused()
    print(json.dumps(state.as_dict()) if args.json else describe(state))
    return 0
