"""Turning what producers pass as a payload or headers into what the queue stores."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pgqd.errors import PgqdError


def encode_payload(value: Any) -> bytes | None:
    """Bytes pass through, str is stored as UTF-8, anything else is JSON-encoded; None stays empty."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise PgqdError(
            f"payload of type {type(value).__name__} cannot be stored: pass bytes, str or a JSON-serialisable "
            f"value ({exc})"
        ) from exc


def encode_headers(headers: Mapping[str, Any] | None) -> str | None:
    """Headers are a JSON object of the producer's choosing (trace context, tenant, ...)."""
    if not headers:
        return None
    if not all(isinstance(key, str) for key in headers):
        raise PgqdError("job headers must be a mapping with str keys")
    try:
        return json.dumps(dict(headers), separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise PgqdError(f"job headers must be JSON-serialisable ({exc})") from exc


def decode_headers(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    decoded = json.loads(text)
    return decoded if isinstance(decoded, dict) else {}
