"""structlog set-up: JSON lines for machines, readable lines on a terminal, and no secrets in either.

Every line is whole, whoever writes it:
- pgqd's own lines and those of the standard ``logging`` module (asyncpg, uvloop, asyncio, the user's libraries),
  Python warnings and uncaught exceptions all go through the same processors and renderer;
- each line goes out with one ``write`` of the line and its newline, so the lines of the supervisor and its
  worker processes, which share the output, never mix. A pipe or a socket keeps a write whole only up to
  ``PIPE_BUF`` bytes (4 KiB on Linux), so there a longer line has its longest value shortened to fit;
- an asyncpg pool (the MCP server's) repeats some warnings, traceback and all, on every reconnect attempt while
  the database is down ("Failed to restore the pool connection floor"): the first of an episode is logged as one
  line, without the traceback, and the repeats are dropped until the database answers again.
"""

from __future__ import annotations

import json
import logging
import os
import select
import stat
import sys
import threading
import time
from collections.abc import MutableMapping
from types import TracebackType
from typing import Any, Literal, TextIO

import structlog

from pgqd.dsn import mask_dsn

LogFormat = Literal["json", "console", "auto"]

# Loggers whose repeated warnings are collapsed into one per episode, and how long a message must stay away for
# its next occurrence to start a new episode when no recovery is reported (asyncpg retries at most every 60 s).
_NOISY_LOGGERS = ("asyncpg",)
_EPISODE_QUIET = 120.0


def _mask_secrets(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event.items():
        if isinstance(value, str) and ("://" in value or "password" in value.lower()):
            event[key] = mask_dsn(value)
    return event


class LineWriter:
    """Writes each line with a single ``write`` call on the file descriptor."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        try:
            self._fd: int | None = stream.fileno()
        except (AttributeError, OSError, ValueError):
            self._fd = None  # an in-memory stream: one write() call on it is just as whole
        self._atomic_limit = 0
        if self._fd is not None:
            try:
                mode = os.fstat(self._fd).st_mode
            except OSError:
                mode = 0
            if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
                self._atomic_limit = select.PIPE_BUF

    def write(self, line: str) -> None:
        data = (line + "\n").encode("utf-8", "backslashreplace")
        if self._atomic_limit and len(data) > self._atomic_limit:
            data = (_shorten(line, self._atomic_limit - 1) + "\n").encode("utf-8", "backslashreplace")
        if self._fd is None:
            self._stream.write(data.decode("utf-8"))
            self._stream.flush()
            return
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._fd, view) :]
            except InterruptedError:
                continue
            except BlockingIOError:
                select.select([], [self._fd], [], 1.0)
            except OSError:
                return  # the reader is gone: nothing can be logged any more, and the work must go on


def _shorten(line: str, limit: int) -> str:
    """The line in at most ``limit`` bytes: for a JSON object, its longest strings are cut in the middle (the
    head of a message and the tail of a traceback are what matter most)."""
    try:
        event = json.loads(line)
    except ValueError:
        event = None
    if not isinstance(event, dict):
        return line.encode()[: limit - 3].decode("utf-8", "ignore") + "..."
    for _ in range(10):
        text = json.dumps(event)
        excess = len(text.encode()) - limit
        if excess <= 0:
            return text
        key = max((k for k, v in event.items() if isinstance(v, str)), key=lambda k: len(event[k]), default=None)
        if key is None:
            break
        value: str = event[key]
        keep = max(len(value) - excess - 40, 0) // 2
        event[key] = f"{value[:keep]} ...[{len(value) - 2 * keep} characters cut]... {value[len(value) - keep :]}"
    return json.dumps({k: v for k, v in event.items() if k in ("event", "level", "timestamp", "pid")})[:limit]


class _LineLogger:
    """structlog's output end: one rendered line, one write."""

    def __init__(self, writer: LineWriter) -> None:
        self._writer = writer

    def msg(self, message: str) -> None:
        self._writer.write(message)

    log = debug = info = warn = warning = error = critical = exception = fatal = failure = err = msg


class _LineHandler(logging.Handler):
    def __init__(self, writer: LineWriter) -> None:
        super().__init__()
        self._writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._writer.write(self.format(record))
        except Exception:
            self.handleError(record)


class _OncePerEpisode(logging.Filter):
    """Lets the first of each repeated warning of a noisy library through, as one line without its traceback."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._last_seen: dict[tuple[str, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(_NOISY_LOGGERS):
            return True
        key = (record.name, str(record.msg))
        now = time.monotonic()
        with self._lock:
            last = self._last_seen.get(key)
            self._last_seen[key] = now
        if last is not None and now - last < _EPISODE_QUIET:
            return False
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            message = f"{message} ({type(error).__name__}: {error})"
        record.msg = f"{message}; repeats are not logged until the database answers again"
        record.args = None
        record.exc_info = None
        record.exc_text = None
        return True

    def reset(self) -> None:
        with self._lock:
            self._last_seen.clear()


_episodes = _OncePerEpisode()


def end_noise_episodes() -> None:
    """The database answers again: the next repeated warning starts a new episode and is logged."""
    _episodes.reset()


def configure_logging(level: str = "info", fmt: LogFormat = "auto", stream: TextIO | None = None) -> None:
    """Sets up structlog and the standard ``logging`` module for the process: JSON when not on a TTY (or
    ``fmt="json"``), console otherwise."""
    out = stream or sys.stderr
    use_console = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: Any = structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    writer = LineWriter(out)
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            stamp,
            structlog.processors.format_exc_info,
            _mask_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=lambda *_args: _LineLogger(writer),
        cache_logger_on_first_use=True,
    )
    handler = _LineHandler(writer)
    handler.addFilter(_episodes)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                structlog.stdlib.add_logger_name,
                structlog.processors.add_log_level,
                stamp,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                _mask_secrets,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for previous in [h for h in root.handlers if isinstance(h, _LineHandler)]:
        root.removeHandler(previous)
    root.addHandler(handler)
    root.setLevel(numeric_level)
    logging.captureWarnings(True)
    _log_uncaught_exceptions()


def _log_uncaught_exceptions() -> None:
    """An exception nobody caught (in the main thread or another one) becomes a log line like any other."""
    log = structlog.get_logger("pgqd")

    def main_hook(kind: type[BaseException], error: BaseException, trace: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, error, trace)
            return
        log.critical("uncaught exception", exc_info=(kind, error, trace))

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit or args.exc_value is None:
            return
        thread = args.thread.name if args.thread is not None else "?"
        log.error(
            "uncaught exception in a thread",
            thread=thread,
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        )

    sys.excepthook = main_hook
    threading.excepthook = thread_hook
