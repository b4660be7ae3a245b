"""A doctor finding: rule id, severity, where, why it breaks and how to fix it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    """One problem in a stack directory, located to a file and line."""

    rule: str
    severity: Severity
    file: str
    line: int
    title: str
    why: str
    fix: str

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}"

    def format_text(self) -> str:
        """``file:line: severity RULE: title`` then the why and the fix, indented."""
        return (f"{self.location}: {self.severity} {self.rule}: {self.title}\n"
                f"    why: {self.why}\n    fix: {self.fix}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rel(path: Path, root: Path) -> str:
    """A path as the operator knows it: relative to the stack root when inside it."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)
