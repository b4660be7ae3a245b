"""How times and statuses are shown. Snapshot tests replace :func:`duration` to freeze clocks."""

from __future__ import annotations

STATUS_ICON: dict[str, str] = {
    "pending": "·",
    "running": "▶",
    "retrying": "↻",
    "ok": "✓",
    "changed": "✚",
    "failed": "✗",
    "skipped": "⤼",
    "interrupted": "⏸",
    "declined": "⊘",
    "locked": "🔒",
    "ready": "○",
    "passed": "✓",
}

STATUS_STYLE: dict[str, str] = {
    "running": "bold yellow",
    "retrying": "yellow",
    "ok": "green",
    "changed": "bold green",
    "passed": "bold green",
    "failed": "bold red",
    "skipped": "dim",
    "interrupted": "magenta",
    "declined": "yellow",
    "locked": "dim",
    "pending": "dim",
    "ready": "cyan",
}


def duration(seconds: float | None) -> str:
    """A short human duration: ``0.4s``, ``12s``, ``3m05s``, ``1h02m``. Empty for None."""
    if seconds is None:
        return ""
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


def icon(status: str) -> str:
    """The one-character mark of a step or phase status."""
    return STATUS_ICON.get(status, "?")


def style(status: str) -> str:
    """The Rich style of a status mark."""
    return STATUS_STYLE.get(status, "")


def reflow(text: str) -> str:
    """A runbook description as paragraphs: YAML block scalars (``|``) keep the author's
    hard line breaks, which wrap raggedly in a pane of another width. Lines of one
    paragraph are joined with a space; blank lines separate paragraphs; list items
    (``-``, ``*``, ``1.``) and indented lines start a line of their own."""
    out: list[str] = []
    for raw in text.strip().splitlines():
        line = raw.rstrip()
        stripped = line.lstrip()
        if not stripped:
            if out and out[-1] != "":
                out.append("")
            continue
        item = stripped[:2] in ("- ", "* ") or (stripped.split(" ", 1)[0].rstrip(".").isdigit()
                                               and stripped.split(" ", 1)[0].endswith("."))
        if out and out[-1] != "" and not item and line == stripped:
            out[-1] = f"{out[-1]} {stripped}"
        else:
            out.append(line if item or line != stripped else stripped)
    return "\n".join(out)
