"""Configuration: TOML text → validated, frozen dataclasses (``load_config``), and back (``render``)."""

from pgqd.config.load import ConfigProblems, load_config, parse_config
from pgqd.config.model import (
    Config,
    DatabaseConfig,
    EntrypointConfig,
    LoggingConfig,
    MetricsConfig,
    RetentionConfig,
    RetryConfig,
    ScheduleConfig,
    WorkersConfig,
)

__all__ = [
    "Config",
    "ConfigProblems",
    "DatabaseConfig",
    "EntrypointConfig",
    "LoggingConfig",
    "MetricsConfig",
    "RetentionConfig",
    "RetryConfig",
    "ScheduleConfig",
    "WorkersConfig",
    "load_config",
    "parse_config",
]
