"""The daemon's internals: the supervisor, the life of one forked worker process, health and HTTP, systemd,
runtime wiring, metrics, logging, schedules and the embedded server. Nothing here is public API."""
