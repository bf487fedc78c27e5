"""The daemon, laid out by process: ``supervisor/`` runs in the supervisor, ``worker/`` in each forked worker
process, and the modules here in both (logging, metrics, the check-in line between them, the embedded server).
Nothing here is public API."""
