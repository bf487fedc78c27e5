"""What a Django task job carries: the task's import path and its arguments, as JSON in the job's payload."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pgqd.contrib.django.compat import normalize_json
from pgqd.errors import PgqdError


@dataclass(frozen=True)
class TaskCall:
    path: str
    args: list[Any]
    kwargs: dict[str, Any]


def encode_call(task: Any, args: Any, kwargs: Any) -> bytes:
    """The job payload of one call of ``task``. Arguments that JSON cannot carry fail here, in the caller's
    process, rather than later in a worker."""
    try:
        call = {"task": task.module_path, "args": normalize_json(list(args)), "kwargs": normalize_json(dict(kwargs))}
        return to_json(call).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"task {task.module_path}: arguments must be JSON-serialisable (str, int, float, bool, None, lists and "
            f"dicts of them; tuples become lists): {exc}"
        ) from None


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
    ):
        raise PgqdError('the payload is not a Django task call: expected {"task": ..., "args": [...], "kwargs": {...}}')
    return TaskCall(call["task"], call["args"], call["kwargs"])


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
            f"task {path} returned a {type(value).__name__}, which cannot be stored as its result: return a "
            f"JSON-serialisable value ({exc})"
        ) from None
    return normalised
