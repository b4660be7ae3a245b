"""The banner at the top of every screen: practice mode and the session's notices."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..markup import escape

if TYPE_CHECKING:
    from ..services import Session


PRACTICE_LINE = "PRACTICE: embedded AWS emulator, nothing real is created"


def session_notices(session: Session) -> list[str]:
    """The session's notices, without the one the practice line already says."""
    return [n for n in session.notices if not (session.practice and n.startswith("Practice:"))]


def banner_text(session: Session) -> str:
    """The banner: one short line, never cut mid-sentence (it wraps at 80 columns if it
    must). The notices themselves are on the help screen (``?``); the banner says how many."""
    parts = [PRACTICE_LINE] if session.practice else []
    notices = session_notices(session)
    if notices:
        parts.append(f"{len(notices)} note{'' if len(notices) == 1 else 's'} for this "
                     f"session: ? shows {'it' if len(notices) == 1 else 'them'}")
    return escape(" · ".join(parts))


def notices_markdown(session: Session) -> str:
    """The notices in full, for the help screen (empty when there are none)."""
    if not session.notices and not session.practice:
        return ""
    lines = ["", "## This session", ""]
    if session.practice:
        lines.append(f"- {PRACTICE_LINE}")
    lines += [f"- {n}" for n in session.notices]
    return "\n".join(lines) + "\n"
