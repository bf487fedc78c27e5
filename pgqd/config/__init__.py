"""Configuration: TOML text → validated, frozen dataclasses (``load.load_config``), and back (``render``)."""
