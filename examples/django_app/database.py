"""Django's DATABASES entry for a PostgreSQL URI, the form pgqd's own config takes.

Shared by the example settings and the test project; in a real project dj-database-url or your own settings do
this.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


def django_database(dsn: str) -> dict[str, Any]:
    parts = urlsplit(dsn)
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")) or "postgres",
        "USER": unquote(parts.username or "") or query.get("user", "postgres"),
        "PASSWORD": unquote(parts.password or ""),
        # A socket directory arrives as ?host=/path (the embedded server); a TCP host in the authority part.
        "HOST": parts.hostname or query.get("host", ""),
        "PORT": str(parts.port or query.get("port", "")),
    }
