"""Escaping engine and operator text for Textual markup.

Neither rich.markup.escape nor textual.markup.escape escapes an unclosed bracket such as
``[dim`` (a truncated value, a log line): Textual's parser then pairs it with a later tag
and raises MarkupError mid-run. A backslash before every ``[`` is always literal.
"""

from __future__ import annotations

from ..engine.text import clean


def escape(text: str) -> str:
    """Make any text literal inside Textual markup, its control characters shown, not obeyed."""
    return clean(text).replace("[", "\\[")
