"""Starting the real ``pgqd`` daemon as a subprocess and watching it from a test."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar

from tests.support.cli import PGQD

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


class StartDaemon(Protocol):
    """The ``start_daemon`` fixture: writes ``config`` to a file and starts ``pgqd`` on it."""

    def __call__(self, config: str, env: dict[str, str] | None = None, dsn: str | None = None) -> Daemon: ...


BASE_CONFIG = """
[workers]
processes = {processes}
concurrency = 10
batch_size = 10
poll_interval = "1s"
worker_timeout = "{worker_timeout}"
shutdown_timeout = "{shutdown_timeout}"
resources = "tests.support.daemon_app:lifespan"
{workers_extra}

[metrics]
{metrics}

[logging]
level = "info"
format = "json"

[entrypoints.sleeper]
handler = "tests.support.daemon_app:sleeper"
"""


def daemon_config(
    processes: int = 2,
    worker_timeout: str = "10s",
    shutdown_timeout: str = "3s",
    workers_extra: str = "",
    extra: str = "",
    metrics_port: int | None = None,
    level: str = "info",
) -> str:
    metrics = f'listen = "127.0.0.1:{metrics_port}"' if metrics_port else "enabled = false"
    return (
        BASE_CONFIG.format(
            processes=processes,
            worker_timeout=worker_timeout,
            shutdown_timeout=shutdown_timeout,
            workers_extra=workers_extra,
            metrics=metrics,
        ).replace('level = "info"', f'level = "{level}"')
        + extra
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def http_get(port: int, path: str, timeout: float = 10) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Polls ``check`` until it returns something truthy; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


class Daemon:
    """One ``pgqd --config FILE`` process with its log captured to a file.

    A subclass may start pgqd under a launcher that forks it and waits (``unshare --fork``, ``faketime``): it
    sets ``launched_as_child``, and ``pid`` is then the launcher's child, the supervisor itself. Launchers do
    not pass signals on, so every signal goes to that pid; the launcher exits with the supervisor's status."""

    launched_as_child = False

    def __init__(self, config_path: Path, dsn: str, env: dict[str, str] | None = None) -> None:
        self.config_path = config_path
        self.log_path = config_path.with_suffix(f".{time.monotonic_ns()}.log")
        self.env = {**os.environ, "PGQD_DSN": dsn, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        # Where it starts, and so where it imports handlers from.
        self.cwd = REPO

    def command(self) -> list[str]:
        return [PGQD, "--config", str(self.config_path)]

    def start(self) -> Self:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        """The supervisor's pid."""
        assert self.process is not None
        if not self.launched_as_child:
            return self.process.pid
        launcher = self.process.pid
        return wait_for(lambda: children_of(launcher), timeout=10, what="the launcher to start pgqd")[0]

    @property
    def group(self) -> int:
        """The process group of the launcher, the supervisor and every worker."""
        assert self.process is not None
        return self.process.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self) -> list[dict[str, object]]:
        found = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except ValueError:
                    continue
        return found

    def json_lines(self) -> list[dict[str, Any]]:
        """Every line of the output, each of which must be one JSON object (the test fails otherwise)."""
        lines = []
        for number, line in enumerate(self.log_text().splitlines(), 1):
            try:
                parsed = json.loads(line)
            except ValueError:
                raise AssertionError(f"line {number} of the daemon's output is not JSON: {line!r}") from None
            assert isinstance(parsed, dict), f"line {number} is not a JSON object: {line!r}"
            lines.append(parsed)
        return lines

    def has_event(self, event: str) -> bool:
        return any(e.get("event") == event for e in self.events())

    def wait_ready(self, timeout: float = 20) -> Daemon:
        wait_for(lambda: self.has_event("supervisor ready") or self._exited(), timeout, "the daemon to be ready")
        assert self.process is not None
        assert self.process.poll() is None, self.log_text()
        wait_for(lambda: len(self.worker_pids()) > 0, timeout, "worker processes")
        return self

    def _exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def worker_pids(self) -> list[int]:
        return [pid for pid in children_of(self.pid) if _is_python(pid)]

    def replaced(self, old_pid: int) -> bool:
        """True once a worker other than ``old_pid`` runs and ``old_pid`` is gone (one look at /proc, no race)."""
        pids = self.worker_pids()
        return bool(pids) and old_pid not in pids

    def send(self, signum: signal.Signals) -> None:
        assert self.process is not None
        if self.launched_as_child:
            os.kill(self.pid, signum)
        else:
            self.process.send_signal(signum)  # a no-op once the process has been reaped

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM to the supervisor, then SIGKILL of the whole process group if it does not exit in time."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        with contextlib.suppress(ProcessLookupError):
            self.send(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.group, signal.SIGKILL)
            return self.process.wait(5)


def children_of(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _is_python(pid: int) -> bool:
    """A worker process: forked from the daemon, and not one of its short-lived rescue processes."""
    try:
        forked = b"pgqd" in Path(f"/proc/{pid}/cmdline").read_bytes()
        return forked and Path(f"/proc/{pid}/comm").read_text().strip() != "pgqd-rescue"
    except OSError:
        return False
