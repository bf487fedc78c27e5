"""Keeping secrets out of what pgqd prints: DSNs with their passwords masked."""

from __future__ import annotations

import re

_URI_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]*(?P<tail>@)", re.IGNORECASE)
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)


def mask_dsn(text: str) -> str:
    """Replaces any password inside a DSN (URI or key=value form) with ``***``."""
    text = _URI_PASSWORD.sub(r"\g<head>***\g<tail>", text)
    return _KV_PASSWORD.sub(r"\g<head>***", text)
