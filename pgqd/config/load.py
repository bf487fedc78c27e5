"""Reading a config file: TOML parsing, validation into dataclasses, environment overrides, handler imports.

Every problem found is reported at once, each with the file, the key path and what is wrong.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, fields, replace
from pathlib import Path
from typing import Any

from pgqd.config.kinds import Invalid
from pgqd.config.model import DJANGO_TASK_RUNNER, Config, DjangoConfig, EntrypointConfig
from pgqd.errors import ConfigError
from pgqd.identifiers import entrypoint_name_problem
from pgqd.imports import ImportProblem, find_module, import_object
from pgqd.models import DJANGO_ENTRYPOINT_PREFIX

CONFIG_ENV = "PGQD_CONFIG"
DSN_ENV = "PGQD_DSN"
WEB_PASSWORD_ENV = "PGQD_WEB_PASSWORD"
WEB_TOKEN_ENV = "PGQD_WEB_TOKEN"


class ConfigProblems(ConfigError):
    """One or more problems in a config file."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        if len(problems) == 1:
            super().__init__(f"{source}: {problems[0]}")
        else:
            listed = "\n".join(f"  - {p}" for p in problems)
            super().__init__(f"{source}: {len(problems)} problems:\n{listed}")


def config_path(explicit: str | None, env: Mapping[str, str] = os.environ) -> Path:
    chosen = explicit or env.get(CONFIG_ENV)
    if not chosen:
        raise ConfigError(f"no config file: pass --config queue.toml or set ${CONFIG_ENV} (`pgqd init` writes one)")
    return Path(chosen)


def load_config(path: Path, env: Mapping[str, str] = os.environ) -> Config:
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (`pgqd init {path}` writes a starter config)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from None
    return parse_config(text, path, env)


def parse_config(text: str, source: Path | None = None, env: Mapping[str, str] = os.environ) -> Config:
    where = str(source) if source else "<config>"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigProblems(where, [f"invalid TOML: {exc}"]) from None
    problems: list[str] = []
    config: Config | None = _build(Config, data, (), problems)
    if config is not None:
        problems.extend(_cross_check(config))
    if problems or config is None:
        raise ConfigProblems(where, problems)
    config = replace(config, source=source)
    if env.get(DSN_ENV):
        config = replace(config, database=replace(config.database, dsn=env[DSN_ENV]))
    return config


def _label(path: tuple[str, ...], key: str) -> str:
    return f"[{'.'.join(path)}] {key}" if path else key


def _suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _has_default(f: Field[Any]) -> bool:
    return f.default is not MISSING or f.default_factory is not MISSING


def _build(cls: type[Any], data: Any, path: tuple[str, ...], problems: list[str]) -> Any:
    if not isinstance(data, dict):
        problems.append(f"[{'.'.join(path)}]: expected a table, got {data!r}")
        return None
    known = {f.name: f for f in fields(cls) if not f.metadata.get("internal")}
    before = len(problems)
    for key in data:
        if key not in known:
            problems.append(f"{_label(path, key)}: unknown key{_suggest(key, list(known))}")
    values: dict[str, Any] = {}
    for name, f in known.items():
        if name not in data:
            if not _has_default(f):
                problems.append(f"{_label(path, name)}: required key is missing")
            continue
        raw = data[name]
        if "section" in f.metadata:
            values[name] = _build(f.metadata["section"], raw, (*path, name), problems)
        elif "table_of" in f.metadata:
            values[name] = _build_table(f.metadata["table_of"], raw, (*path, name), problems)
        else:
            try:
                values[name] = f.metadata["kind"].parse(raw)
            except Invalid as exc:
                problems.append(f"{_label(path, name)}: {exc}")
    if len(problems) > before:
        return None
    return cls(**values)


def _build_table(cls: type[Any], data: Any, path: tuple[str, ...], problems: list[str]) -> dict[str, Any]:
    if not isinstance(data, dict):
        problems.append(f"[{'.'.join(path)}]: expected a table of named sections, got {data!r}")
        return {}
    built = {}
    for name, section in data.items():
        if not name.strip():
            problems.append(f"[{'.'.join(path)}]: names must not be empty")
            continue
        built[name] = _build(cls, section, (*path, name), problems)
    return built


def _cross_check(config: Config) -> list[str]:
    problems = []
    served = config.served_entrypoints
    if not served:
        problems.append('no entrypoints: add at least one [entrypoints.NAME] section with handler = "module:function"')
    names = list(served)
    for name, schedule in config.schedules.items():
        if schedule.entrypoint not in served:
            known = ", ".join(names) or "none"
            problems.append(
                f"[schedules.{name}] entrypoint: {schedule.entrypoint!r} is not an entrypoint of this config"
                f"{_suggest(schedule.entrypoint, names)} (known: {known})"
            )
    if config.web.password and config.web.password_file:
        problems.append("[web]: set either password or password_file, not both")
    if config.web.token and config.web.token_file:
        problems.append("[web]: set either token or token_file, not both")
    if config.database.dsn and config.database.embedded:
        problems.append("[database]: set either dsn (an existing server) or embedded (a private one), not both")
    for name, entry in config.entrypoints.items():
        problem = entrypoint_name_problem(name)
        if problem is not None:
            problems.append(f"[entrypoints.{name}]: {problem}")
        if entry.retry.initial > entry.retry.max:
            problems.append(f"[entrypoints.{name}.retry] initial: must not exceed max")
    if config.django is not None:
        problems.extend(_check_django_queues(config.django, config.entrypoints))
    return problems


def _check_django_queues(django: DjangoConfig, entrypoints: Mapping[str, EntrypointConfig]) -> list[str]:
    problems = []
    if not django.queues:
        problems.append("[django.queues]: serve at least one Django queue, e.g. [django.queues.default]")
    for queue, entry in django.queues.items():
        name = DJANGO_ENTRYPOINT_PREFIX + queue
        if name in entrypoints:
            problems.append(
                f'[django.queues.{queue}]: the queue is served as entrypoint "{name}", which [entrypoints."{name}"] '
                "defines too: set its limits in one of the two places"
            )
        if entry.retry.initial > entry.retry.max:
            problems.append(f"[django.queues.{queue}.retry] initial: must not exceed max")
    return problems


def import_handlers(config: Config, source: str = "<config>") -> dict[str, Any]:
    """Imports every handler (and the resources factory) so that a typo fails at start-up, before any fork."""
    problems: list[str] = []
    handlers: dict[str, Any] = {}
    for name, entry in config.served_entrypoints.items():
        handler = _import(entry, name, problems)
        if handler is not None:
            handlers[name] = handler
    if config.django is not None:
        # Found, not imported: settings run in the worker processes, after the fork, so that they are read
        # afresh on every reload and see what the daemon set up before forking (the embedded server).
        try:
            find_module(config.django.settings)
        except ImportProblem as exc:
            problems.append(f'[django] settings: "{config.django.settings}" could not be found: {exc}')
    if config.workers.resources:
        try:
            import_object(config.workers.resources)
        except ImportProblem as exc:
            problems.append(f'[workers] resources: "{config.workers.resources}" could not be imported: {exc}')
    if problems:
        raise ConfigProblems(str(config.source) if config.source else source, problems)
    return handlers


def _import(entry: EntrypointConfig, name: str, problems: list[str]) -> Any:
    try:
        handler = import_object(entry.handler)
    except ImportProblem as exc:
        if entry.handler == DJANGO_TASK_RUNNER:
            problems.append(f"[django]: Django tasks need Django: pip install 'pgqd[django]' ({exc})")
            return None
        problems.append(f'[entrypoints.{name}] handler: "{entry.handler}" could not be imported: {exc}')
        return None
    if not callable(handler):
        problems.append(f'[entrypoints.{name}] handler: "{entry.handler}" is not callable')
        return None
    return handler


@dataclass(frozen=True)
class WebCredentials:
    """What ``pgqd web`` accepts: an HTTP basic user and password, a bearer token, either, or neither."""

    username: str
    password: str | None
    token: str | None

    @property
    def required(self) -> bool:
        return self.password is not None or self.token is not None


def web_credentials(config: Config, env: Mapping[str, str] = os.environ) -> WebCredentials:
    """The web UI's secrets: the environment wins over a file, which wins over the config's own value."""
    web = config.web
    password = env.get(WEB_PASSWORD_ENV) or _secret_file(config, "password_file", web.password_file) or web.password
    token = env.get(WEB_TOKEN_ENV) or _secret_file(config, "token_file", web.token_file) or web.token
    return WebCredentials(web.username, password or None, token or None)


def _secret_file(config: Config, key: str, path: str | None) -> str | None:
    if path is None:
        return None
    where = config.resolve_path(path)
    try:
        lines = where.read_text("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"[web] {key}: {where} cannot be read: {exc}") from None
    secret = lines[0].strip() if lines else ""
    if not secret:
        raise ConfigError(f"[web] {key}: {where} is empty")
    return secret
