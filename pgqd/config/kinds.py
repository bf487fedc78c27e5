"""What a config value may be: each kind checks and converts one TOML value, or says what is wrong with it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from croniter import croniter

from pgqd.units import Rate, format_duration, parse_duration, parse_rate


class Invalid(ValueError):
    """A value that does not fit its kind; the message says what was expected."""


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array"}.get(
        type(value), "a table" if isinstance(value, dict) else type(value).__name__
    )


@dataclass(frozen=True)
class Integer:
    minimum: int | None = None
    maximum: int | None = None

    def parse(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"expected an integer, got {_type_name(value)} {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise Invalid(f"must be at least {self.minimum}, got {value}")
        if self.maximum is not None and value > self.maximum:
            raise Invalid(f"must be at most {self.maximum}, got {value}")
        return value

    def dump(self, value: Any) -> Any:
        return value


@dataclass(frozen=True)
class Duration:
    minimum: float = 0.0
    allow_zero: bool = False

    def parse(self, value: Any) -> float:
        if not isinstance(value, str):
            raise Invalid(f'expected a duration string such as "30s", got {_type_name(value)} {value!r}')
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        if seconds == 0 and self.allow_zero:
            return seconds
        if seconds <= self.minimum:
            raise Invalid(f"must be longer than {format_duration(self.minimum)}, got {value!r}")
        return seconds

    def dump(self, value: Any) -> Any:
        return format_duration(value)


@dataclass(frozen=True)
class RateKind:
    def parse(self, value: Any) -> Rate:
        if not isinstance(value, str):
            raise Invalid(f'expected a rate string such as "10/s", got {_type_name(value)} {value!r}')
        try:
            return parse_rate(value)
        except ValueError as exc:
            raise Invalid(str(exc)) from None

    def dump(self, value: Any) -> Any:
        return str(value)


@dataclass(frozen=True)
class Text:
    pattern: str | None = None
    hint: str = ""
    non_empty: bool = True

    def parse(self, value: Any) -> str:
        if not isinstance(value, str):
            raise Invalid(f"expected a string, got {_type_name(value)} {value!r}")
        if self.non_empty and not value.strip():
            raise Invalid("must not be empty")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise Invalid(f"{value!r} is not valid: {self.hint}")
        return value

    def dump(self, value: Any) -> Any:
        return value


@dataclass(frozen=True)
class Choice:
    options: tuple[str, ...]

    def parse(self, value: Any) -> str:
        if not isinstance(value, str) or value not in self.options:
            shown = ", ".join(f'"{o}"' for o in self.options)
            raise Invalid(f"must be one of {shown}, got {value!r}")
        return value

    def dump(self, value: Any) -> Any:
        return value


@dataclass(frozen=True)
class Boolean:
    def parse(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise Invalid(f"expected true or false, got {_type_name(value)} {value!r}")
        return value

    def dump(self, value: Any) -> Any:
        return value


IMPORT_PATH = Text(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", 'use "package.module:attribute", e.g. "myapp.tasks:send_email"')
LISTEN_ADDRESS = Text(r"(\[[0-9a-fA-F:.]+\]|[\w.-]+):\d{1,5}", 'use "host:port", e.g. "127.0.0.1:9464"')


@dataclass(frozen=True)
class Cron:
    def parse(self, value: Any) -> str:
        if not isinstance(value, str):
            raise Invalid(f"expected a cron expression string, got {_type_name(value)} {value!r}")
        fields = value.split()
        if len(fields) not in (5, 6) or not croniter.is_valid(value):
            raise Invalid(f'{value!r} is not a valid cron expression: use 5 fields ("0 3 * * *") or 6 with seconds')
        return value

    def dump(self, value: Any) -> Any:
        return value


@dataclass(frozen=True)
class TimeZone:
    def parse(self, value: Any) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        if not isinstance(value, str):
            raise Invalid(f"expected an IANA time zone name, got {_type_name(value)} {value!r}")
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise Invalid(f'unknown time zone {value!r}: use an IANA name such as "UTC" or "Europe/Oslo"') from None
        return value

    def dump(self, value: Any) -> Any:
        return value


@dataclass(frozen=True)
class NetworkList:
    """IP addresses or networks ("10.0.0.5", "10.1.0.0/16", "::1"), as a tuple of strings."""

    def parse(self, value: Any) -> tuple[str, ...]:
        import ipaddress

        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise Invalid(f"expected an array of addresses, got {_type_name(value)} {value!r}")
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise Invalid(f"{entry!r} is not an IP address or network, e.g. 10.0.0.5 or 10.1.0.0/16") from None
        return tuple(value)

    def dump(self, value: Any) -> Any:
        return list(value)
