"""Where the engine finds actions by name.

Entries are import paths (``"elematrix_tui.actions.aws:Ensure"``) so that knowing the
name of every action costs nothing; a module is imported only when a runbook uses it.
The engine itself registers nothing: ``elematrix_tui.actions.default_registry`` does.
"""

from __future__ import annotations

import importlib

from .action import Action


class UnknownAction(KeyError):
    pass


class Registry:
    def __init__(self, entries: dict[str, str] | None = None) -> None:
        self._paths: dict[str, str] = dict(entries or {})
        self._classes: dict[str, type[Action]] = {}

    def add(self, name: str, target: str | type[Action]) -> None:
        """Register an action by import path ``module:Class`` or by class."""
        if isinstance(target, str):
            self._paths[name] = target
            self._classes.pop(name, None)
        else:
            self._classes[name] = target
            self._paths[name] = f"{target.__module__}:{target.__qualname__}"

    def names(self) -> list[str]:
        return sorted(self._paths)

    def __contains__(self, name: object) -> bool:
        return name in self._paths

    def get(self, name: str) -> type[Action]:
        if name not in self._paths:
            raise UnknownAction(name)
        cls = self._classes.get(name)
        if cls is None:
            module, _, attr = self._paths[name].partition(":")
            cls = getattr(importlib.import_module(module), attr)
            self._classes[name] = cls
        return cls

    def create(self, name: str) -> Action:
        return self.get(name)()
