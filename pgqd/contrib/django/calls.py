"""What a Django task job carries: the task's import path, its arguments, the backend alias that enqueued it and
the run_after it was given, as JSON in the job's payload. The payload is the only place a task is named: result
ids carry nothing but the job's number."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pgqd.contrib.django.compat import normalize_json
from pgqd.errors import PgqdError


@dataclass(frozen=True)
class TaskCall:
    path: str
    args: list[Any]
    kwargs: dict[str, Any]
    # Absent from payloads written before pgqd kept them.
    backend: str | None = None
    run_after: datetime | None = None


def encode_call(task: Any, args: Any, kwargs: Any, backend: str) -> tuple[bytes, TaskCall]:
    """The job payload of one call of ``task``, and the call as the worker will see it: arguments go through JSON
    here, so a dict's int keys become strings on both sides. Arguments that JSON cannot carry fail here, in the
    caller's process, rather than later in a worker."""
    try:
        call: dict[str, Any] = {
            "task": task.module_path,
            "args": normalize_json(list(args)),
            "kwargs": normalize_json(dict(kwargs)),
            "backend": backend,
        }
        if task.run_after is not None:
            call["run_after"] = task.run_after.isoformat()
        payload = to_json(call).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"task {task.module_path}: arguments must be JSON-serialisable (str, int, float, bool, None, lists and "
            f"dicts of them; tuples become lists): {exc}"
        ) from None
    return payload, decode_call(payload)


def decode_call(payload: bytes | None) -> TaskCall:
    try:
        call = json.loads(payload or b"")
    except ValueError as exc:
        raise PgqdError(f"the payload is not a Django task call (enqueue it with task.enqueue()): {exc}") from None
    if (
        not isinstance(call, dict)
        or not isinstance(call.get("task"), str)
        or not isinstance(call.get("args"), list)
        or not isinstance(call.get("kwargs"), dict)
        or not isinstance(call.get("backend", ""), str)
        or not isinstance(call.get("run_after", ""), str)
    ):
        raise PgqdError('the payload is not a Django task call: expected {"task": ..., "args": [...], "kwargs": {...}}')
    run_after = call.get("run_after")
    try:
        when = None if run_after is None else datetime.fromisoformat(run_after)
    except ValueError:
        raise PgqdError(f"the payload is not a Django task call: run_after {run_after!r} is no ISO time") from None
    return TaskCall(call["task"], call["args"], call["kwargs"], call.get("backend"), when)


def to_json(value: Any) -> str:
    # NaN and infinities are refused: PostgreSQL's jsonb, where results are kept, cannot store them.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def json_result(value: Any, path: str) -> Any:
    """A task's return value as it is stored: normalised the way Django does (tuples become lists); a value JSON
    cannot hold fails the task, as with Django's own backends."""
    try:
        normalised = normalize_json(value)
        to_json(normalised)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"task {path} returned a {type(value).__name__}, which is not JSON serializable and so cannot be stored "
            f"as its result: return a JSON-serialisable value ({exc})"
        ) from None
    return normalised
