"""The worker engine that each daemon worker process runs, usable in-process as ``pgqd.Worker``."""
