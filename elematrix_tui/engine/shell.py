"""Putting values into shell commands: the one home of the rule (issue 20 #6).

Runbook commands run under ``sudo`` on the instance; a parameter or an output put into
one unquoted can split into several words or add commands. Expressions quote with the
``shell_quote`` filter, which is this function.
"""

from __future__ import annotations

import shlex
from typing import Any


def shell_quote(value: Any) -> str:
    """One shell word holding ``value`` exactly, whatever it holds (spaces, quotes, ``;``,
    newlines); a value that needs no quoting is returned as it is."""
    return shlex.quote(str(value))
