"""``pgqd web``: the browser dashboard (needs the ``web`` extra)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from pathlib import Path
from typing import Any

from pgqd.cli.connect import add_connection_arguments, connection, names_from, resolve_dsn
from pgqd.config.load import load_config, web_credentials
from pgqd.config.model import Config
from pgqd.daemon.supervisor.runtime import database_timeouts
from pgqd.errors import ConfigError
from pgqd.identifiers import Names
from pgqd.schema import require_current

WEB_MODULES = ("starlette", "uvicorn", "jinja2")


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "web",
        help="serve the browser dashboard (needs pgqd[web])",
        description=(
            "Serve the web UI: overview, job search and bulk actions, job detail, failures, schedules, workers, "
            "pause and resume. Listens on [web] listen (default 127.0.0.1:9465); any address other than "
            "127.0.0.1, ::1 or localhost needs a password or a token."
        ),
    )
    add_connection_arguments(parser, db_timeout=None)  # its pools follow [database] command_timeout
    parser.add_argument("--listen", help='address to serve on, "host:port" (default: [web] listen)')
    parser.add_argument("--read-only", action="store_true", help="show everything, change nothing")
    parser.add_argument(
        "--read-dsn",
        help="a replica (hot standby) for the read pages; changes still go to the primary (--dsn). "
        "Pages may then trail the primary by the replica's lag",
    )
    parser.add_argument(
        "--trusted-proxies",
        metavar="ADDRESSES",
        help=(
            "comma-separated addresses or networks of reverse proxies whose X-Forwarded-For/-Proto/-Host headers "
            'are believed (default: [web] trusted_proxies, "127.0.0.1,::1"; "" trusts none)'
        ),
    )
    parser.set_defaults(handler=serve)


def missing_web_modules() -> list[str]:
    missing = []
    for name in WEB_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def serve(args: argparse.Namespace) -> int:
    missing = missing_web_modules()
    if missing:
        raise ConfigError(f"pgqd web needs the web extra: pip install 'pgqd[web]' (missing: {', '.join(missing)})")
    import uvicorn

    from pgqd.web.factory import create_app
    from pgqd.web.security import check_bind, split_listen
    from pgqd.web.settings import WebSettings, proxy_networks

    config = load_config(Path(args.config)) if args.config else Config()
    web = config.web
    credentials = web_credentials(config)
    host, port = split_listen(args.listen or web.listen)
    check_bind(host, credentials)
    proxies = web.trusted_proxies if args.trusted_proxies is None else args.trusted_proxies.split(",")
    settings = WebSettings(
        dsn=resolve_dsn(args),
        names=names_from(args),
        entrypoints=tuple(sorted(config.entrypoints)),
        run_timeouts=tuple(
            (name, e.timeout) for name, e in sorted(config.entrypoints.items()) if e.timeout is not None
        ),
        read_only=args.read_only or web.read_only,
        credentials=credentials,
        read_dsn=args.read_dsn,
        timeouts=database_timeouts(config),
        trusted_proxies=proxy_networks([p for p in proxies if p.strip()]),
    )
    asyncio.run(_check_database(settings.dsn, settings.names))
    if settings.read_dsn is not None:
        asyncio.run(_check_database(settings.read_dsn, settings.names))
    shown = f"[{host}]" if ":" in host else host
    mode = (", read-only" if settings.read_only else "") + (", read pages from a replica" if settings.read_dsn else "")
    auth = ", authentication required" if credentials.required else ""
    print(f"pgqd web: serving http://{shown}:{port}/{mode}{auth}", file=sys.stderr, flush=True)
    # proxy_headers off: which proxies to believe is [web] trusted_proxies, applied by pgqd.web.guard.Forwarded.
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        proxy_headers=False,
    )
    return 0


async def _check_database(dsn: str | None, names: Names) -> None:
    """Fails before serving anything when the database cannot be reached or its schema does not fit, with the
    same messages as the other commands."""
    async with connection(dsn) as conn:
        await require_current(conn, names, allow_newer=True)
