"""Least-privilege GRANT statements for the two kinds of database role pgqd meets.

A producer may enqueue, read job states, wait for jobs and cancel them, but not claim or finish them. A worker
may do everything the daemon does. Functions are executable by PUBLIC by default in PostgreSQL, so the
statements take that back first: otherwise any role could call the claim function.
"""

from __future__ import annotations

from pgqd.identifiers import Names, validate_role

FUNCTIONS = {
    "claim_jobs": (
        "bigint, integer, text[], integer[], double precision[], double precision[], boolean, integer[], boolean[],"
        " integer[], boolean, integer[], bigint[]"
    ),
    "raise_dedupe_conflict": "text[]",
    "notify_ids": "text, text, bigint[]",
    # The lead worker's upkeep of the log's partitions (migration 0011): they run with the owner's rights.
    "log_add_partition": "timestamptz, timestamptz",
    "log_drop_partition": "regclass, timestamptz",
    "log_drop_detached": "",
    "log_default_days": "",
    "log_prune_default": "timestamptz, integer",
    "log_roll_minutes": "interval, integer, interval",
    # Workflows (migration 0012): both run with their owner's rights, so a producer needs only to call them.
    "enqueue_steps": (
        "text[], bytea[], text[], integer[], double precision[], timestamptz[], text[], text[], text[], integer[],"
        " bigint[], boolean, text, text"
    ),
    "settle_children": "bigint[], text[], text[], bigint[], text",
    # Retention of workflows' rows (migration 0013), with the owner's rights like the partitions' upkeep.
    "log_release_kept": "",
    "log_sweep_workflows": "integer",
}
WORKFLOW_TABLES = ("job_edges", "workflows", "workflow_steps")
WORKER_TABLES = (
    "jobs",
    "log",
    "log_rollup",
    "log_rollup_state",
    "log_minutes",
    "log_minutes_rolled",
    "workers",
    "entrypoint_limits",
    "entrypoint_pauses",
    "schedules",
    *WORKFLOW_TABLES,
)
WORKER_SEQUENCES = ("jobs_id_seq", "workers_id_seq", "workflows_id_seq")


def grant_statements(names: Names, producer_role: str | None, worker_role: str | None) -> list[str]:
    for role in (producer_role, worker_role):
        if role is not None:
            validate_role(role)
    schema = f'"{names.schema}"'
    statements = [f"-- pgqd grants for schema {names.schema}, prefix {names.prefix!r}"]
    for name, arguments in FUNCTIONS.items():
        statements.append(f"REVOKE EXECUTE ON FUNCTION {names.table(name)}({arguments}) FROM PUBLIC;")
    if producer_role:
        role = f'"{producer_role}"'
        statements += [
            f"GRANT USAGE ON SCHEMA {schema} TO {role};",
            f"GRANT SELECT, INSERT, DELETE ON {names.table('jobs')} TO {role};",
            f"GRANT UPDATE (priority, cancel_requested, notify_finished) ON {names.table('jobs')} TO {role};",
            f"GRANT SELECT, INSERT ON {names.table('log')} TO {role};",
            f"GRANT SELECT ON {names.table('schedules')} TO {role};",
            f"GRANT USAGE ON SEQUENCE {names.table('jobs_id_seq')} TO {role};",
            f"GRANT EXECUTE ON FUNCTION {names.table('raise_dedupe_conflict')}({FUNCTIONS['raise_dedupe_conflict']})"
            f" TO {role};",
            f"GRANT EXECUTE ON FUNCTION {names.table('notify_ids')}({FUNCTIONS['notify_ids']}) TO {role};",
            *(f"GRANT EXECUTE ON FUNCTION {names.table(name)}({FUNCTIONS[name]}) TO {role};"
              for name in ("enqueue_steps", "settle_children")),
            *(f"GRANT SELECT ON {names.table(table)} TO {role};" for table in WORKFLOW_TABLES),
        ]  # fmt: skip
    if worker_role:
        role = f'"{worker_role}"'
        statements.append(f"GRANT USAGE ON SCHEMA {schema} TO {role};")
        for table in WORKER_TABLES:
            statements.append(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {names.table(table)} TO {role};")
        statements.append(f"GRANT SELECT ON {names.table('schema_version')} TO {role};")
        for sequence in WORKER_SEQUENCES:
            statements.append(f"GRANT USAGE ON SEQUENCE {names.table(sequence)} TO {role};")
        for name, arguments in FUNCTIONS.items():
            statements.append(f"GRANT EXECUTE ON FUNCTION {names.table(name)}({arguments}) TO {role};")
    return statements
