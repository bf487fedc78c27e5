"""The procrastinate app compare.py runs: a ``PsycopgConnector`` app with two tasks, as procrastinate's quick
start shapes it. Imported by the worker (``procrastinate --app benchmarks.runners.procrastinate_app.app
worker``) and by the producer; runs only in procrastinate's own virtualenv.
"""

from __future__ import annotations

import os
from typing import Any

import procrastinate

from benchmarks.runners.protocol import DSN_ENV, stamp

app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=os.environ.get(DSN_ENV, "")))


@app.task(name="noop")
async def noop(**arguments: Any) -> None:
    pass


@app.task(name="stamp")
async def stamp_start(sequence: int) -> None:
    stamp(sequence)
