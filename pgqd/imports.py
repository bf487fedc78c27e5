"""Importing the handlers and factories a config names as "package.module:attribute"."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Any


class ImportProblem(Exception):
    """The object could not be imported; the message says why, in the words of the import error."""


def _search_the_current_directory() -> None:
    # Like `python -m`, resolve the user's modules from the directory the daemon was started in.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def import_module(name: str) -> Any:
    _search_the_current_directory()
    try:
        return importlib.import_module(name)
    except Exception as exc:
        raise ImportProblem(f"{type(exc).__name__}: {exc}") from exc


def find_module(name: str) -> None:
    """Checks that a module exists without running it (its parent packages are imported)."""
    _search_the_current_directory()
    try:
        spec = importlib.util.find_spec(name)
    except Exception as exc:
        raise ImportProblem(f"{type(exc).__name__}: {exc}") from exc
    if spec is None:
        raise ImportProblem(f"ModuleNotFoundError: No module named {name!r}")


def import_object(path: str) -> Any:
    module_name, _, attribute = path.partition(":")
    target: Any = import_module(module_name)
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ImportProblem(f"module {module_name!r} has no attribute {attribute!r}") from None
    return target
