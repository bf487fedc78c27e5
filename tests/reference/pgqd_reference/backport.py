"""On Django 5.2, ``django.tasks`` is the django_tasks backport (Django 6 took it in as it was): Django's own
tasks tests and their tasks import ``django.tasks``, in the runner and in the daemon's workers alike, so that name
leads to the backport, and its exceptions answer to Django 6's names too."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

_DJANGO_6_NAMES = {"InvalidTask": "InvalidTaskError", "InvalidTaskBackend": "InvalidTaskBackendError"}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> ModuleSpec | None:
        if fullname == "django.tasks" or fullname.startswith("django.tasks."):
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        module = importlib.import_module("django_tasks" + spec.name.removeprefix("django.tasks"))
        for django_6, backport in _DJANGO_6_NAMES.items():
            if hasattr(module, backport) and not hasattr(module, django_6):
                setattr(module, django_6, getattr(module, backport))
        return module

    def exec_module(self, module: ModuleType) -> None:
        pass  # the backport's module, run once already under its own name


def alias_django_tasks() -> None:
    import django

    if django.VERSION < (6,) and not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.insert(0, _Alias())
