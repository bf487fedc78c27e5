"""Storage backends: the ``Backend`` port (``base``) and its PostgreSQL and in-memory adapters."""
