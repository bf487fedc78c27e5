"""Validation of the schema name and table prefix, and the qualified names built from them.

These two strings are the only configuration that ends up inside SQL text, so they are checked against a strict
pattern before any statement is built; everything else travels as a bind parameter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pgqd.errors import IdentifierError

_PLAIN_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")
MAX_IDENTIFIER_BYTES = 63
# The longest name pgqd appends to the prefix ("jobs_dedupe_key_idx" and friends) must still fit in 63 bytes.
_LONGEST_SUFFIX = len("entrypoint_limits")
MAX_PREFIX_LENGTH = MAX_IDENTIFIER_BYTES - _LONGEST_SUFFIX - len("_pkey")


def validate_schema(schema: str) -> str:
    if not _PLAIN_IDENTIFIER.fullmatch(schema) or len(schema) > MAX_IDENTIFIER_BYTES:
        raise IdentifierError(
            f"schema {schema!r} is not a plain identifier: use lowercase letters, digits and underscores, "
            f"starting with a letter or underscore, at most {MAX_IDENTIFIER_BYTES} characters"
        )
    return schema


def validate_role(role: str) -> str:
    if not _PLAIN_IDENTIFIER.fullmatch(role) or len(role) > MAX_IDENTIFIER_BYTES:
        raise IdentifierError(f"role {role!r} is not a plain identifier: use lowercase letters, digits and underscores")
    return role


def validate_prefix(prefix: str) -> str:
    if (prefix and not _PLAIN_IDENTIFIER.fullmatch(prefix)) or len(prefix) > MAX_PREFIX_LENGTH:
        raise IdentifierError(
            f"prefix {prefix!r} is not a plain identifier: use lowercase letters, digits and underscores, "
            f"starting with a letter or underscore, at most {MAX_PREFIX_LENGTH} characters"
        )
    return prefix


@dataclass(frozen=True)
class Names:
    """Every database name of one pgqd install, derived from a validated schema and prefix."""

    schema: str = "public"
    prefix: str = "pgqd_"

    def __post_init__(self) -> None:
        validate_schema(self.schema)
        validate_prefix(self.prefix)

    def table(self, name: str) -> str:
        """The schema-qualified, quoted name of a pgqd object such as ``jobs``."""
        return f'"{self.schema}"."{self.prefix}{name}"'

    @property
    def channel(self) -> str:
        """The LISTEN/NOTIFY channel shared by producers and workers of this install."""
        return f"{self.schema}.{self.prefix}events"[:MAX_IDENTIFIER_BYTES]

    @property
    def lock_key(self) -> str:
        """Text hashed into the advisory lock that serialises migrations of this install."""
        return f"pgqd:{self.schema}.{self.prefix}"

    def template_values(self) -> dict[str, str]:
        """Placeholders substituted into migration and statement templates."""
        values = {
            name: self.table(name)
            for name in (
                "jobs",
                "log",
                "log_rollup",
                "log_rollup_state",
                "workers",
                "schedules",
                "entrypoint_limits",
                "entrypoint_pauses",
                "action_log",
                "log_minutes",
                "log_minutes_rolled",
                "schema_version",
                "job_status",
                "final_status",
                "claim_jobs",
                "raise_dedupe_conflict",
                "notify_ids",
                "jobs_id_seq",
                "workers_id_seq",
                "job_edges",
                "workflows",
                "workflows_id_seq",
                "workflow_steps",
                "settle_children",
                "enqueue_steps",
            )
        }
        values["schema"] = f'"{self.schema}"'
        values["prefix"] = self.prefix
        return values


# Entrypoint names: what a config may name a section, and what the web UI and the CLI accept as a name to pause
# or filter by. Word characters and a few separators (Django's queues are "django.NAME"), nothing that could
# mean "every entrypoint" ("*") or hide in a log line (spaces, control characters, NUL).
ENTRYPOINT_NAME = re.compile(r"\w[\w.:/@+-]*")
MAX_ENTRYPOINT_NAME = 200


def entrypoint_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be an entrypoint's name, or None if it can."""
    if not name:
        return "entrypoint names must not be empty"
    if len(name) > MAX_ENTRYPOINT_NAME:
        return f"an entrypoint name has at most {MAX_ENTRYPOINT_NAME} characters (this one has {len(name):,})"
    if not ENTRYPOINT_NAME.fullmatch(name):
        return (
            f"{name[:60]!r} is not an entrypoint name: use letters, digits, '_', and '.', ':', '/', '@', '+', '-' "
            "after the first character"
        )
    return None
