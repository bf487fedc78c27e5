-- pgqd schema version 9: finished jobs may keep their payload, so that what a job was called with stays visible.

-- Filled only for the entrypoints that keep payloads (keep_payload = true, and every Django queue); NULL for the
-- others, so they pay nothing. A plain ADD COLUMN: no default, no rewrite of the log.
ALTER TABLE {log} ADD COLUMN payload bytea;
