"""How values look on the pages: ages, times, counts, and payloads (JSON, text or a hex dump).

Everything returned here is plain text: the templates escape it, so a payload cannot inject markup.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

HEX_PREVIEW_BYTES = 1024
TEXT_PREVIEW_CHARS = 200_000


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(moment: datetime | None) -> str:
    if moment is None:
        return ""
    seconds = (datetime.now(UTC) - moment).total_seconds()
    return f"in {age(-seconds)}" if seconds < 0 else f"{age(seconds)} ago"


def count(value: int, cap: int) -> str:
    """A count that may have stopped at ``cap``; a capped one says so, with its estimate when it has one."""
    if value < cap:
        return f"{value:,}"
    estimate = getattr(value, "estimate", None)
    return f"≥ {cap:,}" + (f" (estimate: ~{estimate:,})" if estimate is not None else "")


@dataclass(frozen=True)
class PayloadView:
    kind: str  # "json", "text", "binary" or "none"
    text: str
    size: int
    truncated: bool = False


def payload_view(payload: bytes | None) -> PayloadView:
    if payload is None:
        return PayloadView("none", "", 0)
    size = len(payload)
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return PayloadView("binary", hex_dump(payload[:HEX_PREVIEW_BYTES]), size, size > HEX_PREVIEW_BYTES)
    try:
        return PayloadView("json", json.dumps(json.loads(text), indent=2, ensure_ascii=False), size)
    except ValueError:
        return PayloadView("text", text[:TEXT_PREVIEW_CHARS], size, len(text) > TEXT_PREVIEW_CHARS)


def hex_dump(data: bytes) -> str:
    lines = []
    for offset in range(0, len(data), 16):
        chunk = data[offset : offset + 16]
        hexes = " ".join(f"{b:02x}" for b in chunk)
        shown = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{offset:08x}  {hexes:<47}  {shown}")
    return "\n".join(lines)


def payload_head(payload: bytes | None, limit: int = 80) -> str:
    """A one-line preview for listings; bytes that are not UTF-8 text show as escapes (``\\xff``), never as
    replacement characters that hide what is there."""
    if payload is None:
        return ""
    text = payload.decode("utf-8", errors="backslashreplace")
    text = "".join(c if c.isprintable() or c in " \t\n" else ascii(c)[1:-1] for c in text)
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def pretty_json_value(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def error_history(job: Any) -> list[dict[str, str]]:
    """A job's failed attempts, newest first, without the final error a finished job shows on its own."""
    shown = []
    for entry in reversed(job.errors):
        if not isinstance(entry, dict):
            continue
        item = {key: str(entry.get(key) or "") for key in ("type", "message", "traceback", "attempt", "at")}
        with contextlib.suppress(ValueError):  # a time written by an older version stays as it was
            item["at"] = when(datetime.fromisoformat(item["at"]))
        shown.append(item)
    final = (job.error_type, job.error_message or "", job.error_traceback or "")
    if job.finished and shown and (shown[0]["type"], shown[0]["message"], shown[0]["traceback"]) == final:
        shown.pop(0)
    return shown
