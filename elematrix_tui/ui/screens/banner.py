"""The banner at the top of every screen: practice mode and the session's notices."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..markup import escape

if TYPE_CHECKING:
    from ..app import ElematrixApp


def banner_text(app: ElematrixApp) -> str:
    """The practice banner and the session's notices, or an empty string."""
    lines = []
    if app.practice:
        lines.append("PRACTICE: embedded AWS emulator, nothing real is created")
    lines += [n for n in app.notices if not (app.practice and n.startswith("Practice:"))]
    return "\n".join(escape(n) for n in lines)
