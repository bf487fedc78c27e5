"""``pgqd run`` (the default command), ``pgqd check``, ``pgqd init`` and ``pgqd config``."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import Any

import structlog

from pgqd.backoff import Backoff
from pgqd.cli.connect import DB_TIMEOUT, connection
from pgqd.config.load import config_path, import_handlers, load_config
from pgqd.config.model import Config
from pgqd.config.render import render_effective, starter_config
from pgqd.daemon.embedded import EmbeddedServer
from pgqd.daemon.logs import configure_logging
from pgqd.daemon.metrics import make_multiprocess_directory, remove_multiprocess_directory
from pgqd.daemon.supervisor.main import Supervisor
from pgqd.daemon.supervisor.runtime import names
from pgqd.dsn import mask_dsn
from pgqd.errors import BackendUnavailable, ConfigError, PgqdError, SchemaVersionError
from pgqd.schema import apply_upgrade, require_current
from pgqd.sql import latest_version

log = structlog.get_logger("pgqd")
CONFIG_HELP = "path of the TOML config (default: $PGQD_CONFIG)"


def register(commands: Any, top: argparse.ArgumentParser) -> None:
    top.add_argument("--config", "-c", default=None, help=CONFIG_HELP)
    run_parser = commands.add_parser("run", help="run the worker daemon", description="Run the worker daemon.")
    run_parser.add_argument("--config", "-c", default=None, help=CONFIG_HELP)
    run_parser.set_defaults(handler=run)

    check = commands.add_parser(
        "check",
        help="validate a config: keys, handlers, database, schema version",
        description="Validate the config, import every handler, connect, and check the schema version.",
    )
    check.add_argument("--config", "-c", default=None, help=CONFIG_HELP)
    check.set_defaults(handler=check_config)

    init = commands.add_parser("init", help="write a commented starter config", description="Write a starter config.")
    init.add_argument("path", nargs="?", default="queue.toml", help="where to write it (default: queue.toml)")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.set_defaults(handler=init_config)

    show = commands.add_parser(
        "config", help="print the effective config", description="Print the effective config, defaults filled in."
    )
    show.add_argument("--config", "-c", default=None, help=CONFIG_HELP)
    show.set_defaults(handler=show_config)


class _StopRequested(Exception):
    """SIGTERM or SIGINT arrived while the daemon was still waiting for its database."""


def _raise_stop(_signum: int, _frame: Any) -> None:
    raise _StopRequested


def run(args: argparse.Namespace) -> int:
    # From the first moment to the supervisor's own handlers, SIGTERM and SIGINT end start-up cleanly (exit 0)
    # rather than killing the process by the signal: a daemon told to stop while it loads its config, imports
    # the handlers or waits for its database has nothing to drain.
    previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    embedded: EmbeddedServer | None = None
    try:
        path = config_path(args.config)
        config = load_config(path)
        configure_logging(config.logging.level, config.logging.format)  # type: ignore[arg-type]
        handlers = import_handlers(config)
        dsn = config.database.dsn
        if config.database.embedded:
            embedded = EmbeddedServer(config.resolve_path(config.database.embedded))
            dsn = embedded.start()
            log.info("embedded PostgreSQL running", pgdata=str(embedded.pgdata))
        _wait_for_schema(config, dsn, install=embedded is not None)
        metrics_dir = make_multiprocess_directory()
        try:
            return Supervisor(config, handlers, dsn, config_path=path, metrics_dir=metrics_dir).run()
        finally:
            remove_multiprocess_directory(metrics_dir)
    except _StopRequested:
        log.info("stopped before start-up finished")
        return 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if embedded is not None:
            embedded.stop()


def _wait_for_schema(config: Config, dsn: str | None, *, install: bool) -> None:
    """Checks the schema version before any worker starts, waiting (with backoff) while the database is down:
    under systemd or Kubernetes a database that comes up later should not need a restart of pgqd."""
    backoff = Backoff(initial=0.5, maximum=15.0)
    where = mask_dsn(dsn) if dsn else "the PG* environment"

    async def check() -> None:
        # Bounded, so a database that does not answer is waited for with the others; not while migrating.
        async with connection(dsn, db_timeout=0 if install else DB_TIMEOUT) as conn:
            if install:
                await apply_upgrade(conn, names(config))
            installed = await require_current(conn, names(config), allow_newer=True)
        if installed > latest_version():
            log.warning(
                "the database schema is newer than this pgqd: running on it (migrations only add);"
                " roll out the new pgqd version",
                schema_version=installed,
                code_version=latest_version(),
            )

    while True:
        try:
            asyncio.run(check())
            return
        except BackendUnavailable as exc:
            wait = backoff.next()
            log.warning("waiting for the database", database=where, error=str(exc), retry_in=round(wait, 1))
            time.sleep(wait)


async def check_config(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    config = load_config(path)
    import_handlers(config)
    if config.database.embedded:
        print(f"{path}: OK ({len(config.served_entrypoints)} entrypoints; embedded database, not started by check)")
        return 0
    try:
        async with connection(config.database.dsn) as conn:
            installed = await require_current(conn, names(config), allow_newer=True)
    except (BackendUnavailable, SchemaVersionError) as exc:
        print(f"{path}: configuration valid, but: {exc}", file=sys.stderr)
        return 1
    schema = "schema current" if installed == latest_version() else f"schema version {installed}, newer than this pgqd"
    print(f"{path}: OK ({len(config.served_entrypoints)} entrypoints, {len(config.schedules)} schedules; {schema})")
    return 0


def init_config(args: argparse.Namespace) -> int:
    target = Path(args.path)
    if target.exists() and not args.force:
        raise ConfigError(f"{target} exists: pass --force to overwrite it")
    try:
        target.write_text(starter_config(), "utf-8")
    except OSError as exc:
        raise PgqdError(f"cannot write {target}: {exc}") from None
    print(f"wrote {target}: set your handlers in [entrypoints.*], then `pgqd check --config {target}`")
    return 0


def show_config(args: argparse.Namespace) -> int:
    config = load_config(config_path(args.config))
    sys.stdout.write(render_effective(config))
    return 0
