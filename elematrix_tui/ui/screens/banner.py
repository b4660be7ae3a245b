"""The banner at the top of every screen: practice mode and the session's notices."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..markup import escape

if TYPE_CHECKING:
    from ..services import Session


def banner_text(session: Session) -> str:
    """The practice banner and the session's notices, or an empty string."""
    lines = []
    if session.practice:
        lines.append("PRACTICE: embedded AWS emulator, nothing real is created")
    lines += [n for n in session.notices if not (session.practice and n.startswith("Practice:"))]
    return "\n".join(escape(n) for n in lines)
