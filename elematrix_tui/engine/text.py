"""Text from hosts, AWS and runbooks made safe to show: the one rule every output uses.

A host command's output, an AWS error message or a runbook's own title can carry terminal
control sequences (``ESC [2K`` erases a line, ``ESC ]0;...BEL`` retitles the window, a
bare ``CR`` overwrites what was printed) that fake an ``[ok]`` or hide a failure. Every
place that shows such text (the headless printer, the TUI, ``report.md`` and the JSON
report) passes it through :func:`clean`, so C0 and C1 control characters (and DEL) reach
no terminal and no report: each becomes a visible ``\\xNN``. Tab stays; newline stays
only where it separates lines (``newlines=True``), otherwise it is shown as ``\\x0a`` so
one log line can never pose as two.
"""

from __future__ import annotations

import re
from typing import Any

# C0 (0x00-0x1f) without tab and newline, DEL, and C1 (0x80-0x9f: CSI, OSC, ST as one
# character each, which some terminals still honour).
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROLS_AND_NEWLINE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def _visible(m: re.Match[str]) -> str:
    return f"\\x{ord(m.group()):02x}"


def clean(text: str, *, newlines: bool = True) -> str:
    """``text`` with every control character except tab (and newline) made visible."""
    pattern = _CONTROLS if newlines else _CONTROLS_AND_NEWLINE
    return pattern.sub(_visible, text)


def clean_line(text: str) -> str:
    """One line of output: newlines inside it are shown, never obeyed."""
    return clean(text, newlines=False)


def clean_data(value: Any) -> Any:
    """Every string inside nested dicts and lists cleaned (keys too); other values as they are."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, dict):
        return {clean_data(k): clean_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_data(v) for v in value]
    return value
