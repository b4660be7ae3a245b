"""Errors for the operator: each says where (file:line:col, step, parameter) and what to do."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Located:
    """One problem at one place in a file. Line and column are 1-based (0: unknown)."""

    path: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        if self.line:
            return f"{self.path}:{self.line}:{self.col}: {self.message}"
        return f"{self.path}: {self.message}" if self.path else self.message


class InputError(Exception):
    """Bad operator input (runbook, parameters, command line): exit code 2, nothing written."""

    def __init__(self, errors: list[Located] | str) -> None:
        if isinstance(errors, str):
            errors = [Located("", 0, 0, errors)]
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


class RunbookError(InputError):
    """The runbook (or a parameter file) is invalid; ``errors`` lists every problem found."""


class LockedError(Exception):
    """Another process holds the deployment's lock."""


class GuardError(Exception):
    """A run was refused before it started (wrong account, locked phase...): exit 1."""


class PromptCancelled(Exception):
    """The operator cancelled a prompt the run needed answered (a secret modal, say).

    Raised by a ``Questions`` implementation (``engine.action.Questions``); the runner ends
    the run as interrupted (exit 130, resumable, nothing more applied), never as a crash,
    and releases the deployment's lock and journal as for any other ending.
    """
