"""Importing the handlers and factories a config names as "package.module:attribute"."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any


class ImportProblem(Exception):
    """The object could not be imported; the message says why, in the words of the import error."""


def import_module(name: str) -> Any:
    # Like `python -m`, resolve the user's modules from the directory the daemon was started in.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except Exception as exc:
        raise ImportProblem(f"{type(exc).__name__}: {exc}") from exc


def import_object(path: str) -> Any:
    module_name, _, attribute = path.partition(":")
    target: Any = import_module(module_name)
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ImportProblem(f"module {module_name!r} has no attribute {attribute!r}") from None
    return target
