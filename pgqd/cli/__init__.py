"""The ``pgqd`` command line: argument parsing and dispatch to one module per command group."""

from __future__ import annotations

import argparse
import asyncio
import inspect
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pgqd.cli import (
    daemon_commands,
    dashboard,
    job_commands,
    mcp_command,
    ops_commands,
    pause_commands,
    schema_commands,
    web_command,
)
from pgqd.errors import BackendUnavailable, ConfigError, PgqdError

EXIT_FAILURE, EXIT_USAGE = 1, 2

# A command is a function of the parsed arguments returning the exit status; async ones run on an event loop,
# plain ones (the daemon, which forks) run without one.
Command = Callable[[argparse.Namespace], Any]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgqd",
        description="PostgreSQL-backed job queue daemon. Without a command, runs the daemon (same as `pgqd run`).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    schema_commands.register(commands)
    job_commands.register(commands)
    job_commands.register_schedules(commands)
    ops_commands.register(commands)
    pause_commands.register(commands)
    dashboard.register(commands)
    mcp_command.register(commands)
    web_command.register(commands)
    daemon_commands.register(commands, parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Command | None = getattr(args, "handler", None)
    if handler is None:
        handler = daemon_commands.run
    try:
        if inspect.iscoroutinefunction(handler):
            return int(asyncio.run(handler(args)))
        return int(handler(args))
    except ConfigError as exc:
        print(f"pgqd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BackendUnavailable as exc:
        print(f"pgqd: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except PgqdError as exc:
        print(f"pgqd: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
