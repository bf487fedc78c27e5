"""The url-encoded form of a POST, read once and shared by the guard and the action that answers it."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request

MAX_FORM_BYTES = 4_000_000


async def request_form(request: Request) -> dict[str, Any]:
    """Single values as str, repeated ones (ids) as lists."""
    cached: dict[str, Any] | None = getattr(request.state, "form", None)
    if cached is not None:
        return cached
    body = await request.body()
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    parsed: dict[str, Any] = {}
    if kind == "application/x-www-form-urlencoded" and len(body) <= MAX_FORM_BYTES:
        for key, values in parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True).items():
            parsed[key] = values if key == "id" else values[-1]
    request.state.form = parsed
    return parsed
