"""What a runbook does on the operator's own machine: said before anything runs.

A runbook is trusted code (docs/runbook-format.md, "Trust"). The sandbox contains its
expressions and its file inputs (engine/containment.py), but some actions act on this
machine by design: ``ssh.* host: local`` runs commands here, ``local.write`` writes any
file, a key pair step reads the operator's public key. ``elematrix validate`` and
``elematrix plan`` list every such step, from each action's ``local_effects``, so an
operator reading someone else's runbook sees them first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .model import Runbook
from .registry import Registry


@dataclass(frozen=True)
class LocalEffect:
    """One thing one step does on this machine."""

    phase_id: str
    step_id: str
    action: str
    text: str

    def __str__(self) -> str:
        return f"{self.phase_id}/{self.step_id} ({self.action}): {self.text}"


def is_loopback_url(url: str) -> bool:
    """Whether ``url`` names this machine (localhost, 127.0.0.0/8, ::1): a request there
    reaches the operator's own services."""
    import ipaddress
    from urllib.parse import urlsplit

    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def step_effects(registry: Registry, action: str, with_: dict[str, Any]) -> list[str]:
    """One step's effects on this machine (none for an action that cannot load)."""
    try:
        return registry.create(action).local_effects(with_)
    except Exception:  # an unknown or broken action is reported by validate itself
        return []


def local_effects(rb: Runbook, registry: Registry) -> list[LocalEffect]:
    """Every step and gate (and cleanup) of the runbook that acts on this machine."""
    out: list[LocalEffect] = []
    for ph in rb.phases:
        for st in [*ph.steps, *ph.gates, *ph.cleanup]:
            for text in step_effects(registry, st.action, st.with_):
                out.append(LocalEffect(ph.id, st.id, st.action, text))
    return out
