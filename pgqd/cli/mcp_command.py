"""``pgqd mcp``: read-only MCP tools over stdio (needs the ``mcp`` extra)."""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from pgqd.cli.connect import add_connection_arguments, connection, names_from, resolve_dsn
from pgqd.errors import ConfigError


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "mcp",
        help="serve read-only MCP tools over stdio (needs pgqd[mcp])",
        description=(
            "Serve read-only Model Context Protocol tools on stdin/stdout, for an AI assistant to start as a "
            "subprocess: queue_depth, throughput, failed_jobs, job_detail, workers, schedules, "
            "paused_entrypoints. Nothing can be changed through them."
        ),
    )
    add_connection_arguments(parser)
    parser.set_defaults(handler=serve)


async def serve(args: argparse.Namespace) -> int:
    try:
        importlib.import_module("mcp")
    except ImportError as exc:
        raise ConfigError(f"pgqd mcp needs the mcp extra: pip install 'pgqd[mcp]' ({exc})") from None
    from pgqd.ops import mcp_server

    dsn = resolve_dsn(args)
    async with connection(dsn, db_timeout=args.db_timeout):
        pass  # fails early, and says why, when the database cannot be reached
    await mcp_server.serve(dsn, names_from(args), args.db_timeout)
    return 0
