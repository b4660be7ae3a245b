"""The one parameter resolver: what every parameter's value is for a run, and why.

``run``, ``resume`` and ``plan`` all call :func:`resolve_params`, so a plan can never
show a value that the run then refuses (a new ``server_name`` for a deployment whose
name is locked) or use another value than the run would (a remembered one).

It is pure: everything it needs comes in as data (the runbook, the given values, the
deployment's stored parameters) or as read-only look-ups (the secret store); it writes
nothing. What it decided comes back as a :class:`Resolution`; the runner then stores
the secrets and remembers the values, the plan only shows them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from .errors import Located
from .model import Param, Runbook
from .params import ParamValueError, coerce, generate_secret, unknown_params

# Journal meta: the non-secret values a deployment remembers across runs.
META_PARAMS = "params"
# Journal meta: the names (never the values) of every secret stored for the deployment.
META_SECRET_NAMES = "secret_names"
# Journal meta prefix of a permanent parameter's locked value (``permanent.server_name``).
META_PERMANENT = "permanent."

# Where a value came from, in the order that decides it (first wins).
Origin = Literal["given", "remembered", "default", "stored", "generated", "ask", "missing"]


class MetaReader(Protocol):
    """The read side of a journal that resolving needs (a Journal satisfies it)."""

    def get_meta(self, key: str) -> Any: ...


@dataclass(frozen=True)
class StoredParams:
    """What a deployment has kept about its parameters: remembered values, locked ones."""

    remembered: Mapping[str, Any] = field(default_factory=dict)
    locked: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, journal: MetaReader | None, rb: Runbook) -> StoredParams:
        """Read them from a journal (None: a deployment with no journal yet)."""
        if journal is None:
            return cls()
        locked = {p.name: v for p in rb.params if p.permanent
                  and (v := journal.get_meta(META_PERMANENT + p.name)) is not None}
        return cls(dict(journal.get_meta(META_PARAMS) or {}), locked)


@dataclass
class Resolution:
    """Every parameter's value and what resolving decided; nothing has been written yet."""

    values: dict[str, Any]
    origin: dict[str, Origin]
    secret_names: frozenset[str]
    # Secrets to store once everything is valid (given ones that differ, generated ones).
    to_store: dict[str, str]
    # Required secrets with no value: the runner asks for them, the plan says it will.
    ask: list[Param]
    # What the deployment remembers if the run does not fail (see should_remember).
    to_remember: dict[str, Any]
    # Every reason the run would refuse to start (exit 2), in the runbook's order.
    errors: list[Located]
    # Required non-secret parameters with no value (their errors are among ``errors``):
    # run refuses them; plan shows them missing and the steps that need them blocked.
    missing: list[str] = field(default_factory=list)

    @property
    def refusals(self) -> list[Located]:
        """The errors but those of missing values: what plan refuses like run does."""
        return [e for e in self.errors
                if not any(e.message.startswith(_missing_prefix(n)) for n in self.missing)]

    def journal_params(self) -> dict[str, Any]:
        """The values as the journal records them: secrets as references, never values."""
        return journal_params(self.values, self.secret_names)


def _missing_prefix(name: str) -> str:
    return f"parameter {name!r} is required: "


def _error(msg: str) -> Located:
    return Located("--set", 0, 0, msg)


def resolve_params(rb: Runbook, given: Mapping[str, Any], *, deployment: str,
                   stored: StoredParams,
                   secret: Callable[[str], str | None],
                   replace_secrets: frozenset[str] | set[str] = frozenset(),
                   generate: Callable[[int], str] = generate_secret) -> Resolution:
    """Resolve every parameter of ``rb`` for ``deployment``; all validated together.

    Order, first wins: the value given (``--set``, ``--params``, the form, the
    environment for secrets), the value the deployment remembers (``remember: true``),
    the default. A secret comes from what is given, else the store (``secret(name)``),
    else it is generated (``generate: N``) or asked for. A given secret that differs
    from the stored one is an error unless ``replace_secrets`` names it; a permanent
    parameter whose value differs from its locked one is an error. Errors are located
    (``--set``, the parameter's name) and collected, never raised.
    """
    remembered = dict(stored.remembered)
    errors: list[Located] = unknown_params(rb, given)
    values: dict[str, Any] = {}
    origin: dict[str, Origin] = {}
    to_store: dict[str, str] = {}
    ask: list[Param] = []
    missing: list[str] = []
    secret_names = frozenset(p.name for p in rb.params if p.type == "secret")
    for p in rb.params:
        if p.type == "secret":
            _resolve_secret(p, given, deployment, secret, replace_secrets, generate,
                            values, origin, to_store, ask, errors)
            continue
        if p.name in given:
            raw, origin[p.name] = given[p.name], "given"
        elif p.remember and p.name in remembered:
            raw, origin[p.name] = remembered[p.name], "remembered"
        else:
            raw, origin[p.name] = p.default, "default"
        if raw is None:
            values[p.name] = None
            if p.is_required:
                origin[p.name] = "missing"
                missing.append(p.name)
                errors.append(_error(f"{_missing_prefix(p.name)}"
                                     f"--set {p.name}=VALUE ({p.help or p.type})"))
            continue
        try:
            values[p.name] = coerce(p, raw)
        except ParamValueError as e:
            errors.append(_error(f"parameter {p.name!r}: {e}"))
            continue
        problem = permanent_conflict(p, values[p.name], stored.locked, deployment)
        if problem:
            errors.append(_error(problem))
    # Merge: another runbook of this deployment (teardown) must not forget what this one
    # was given (operator_cidr); one-shot values (remember: false) are never kept, and one
    # kept by an older version is dropped.
    one_shot = {p.name for p in rb.params if not p.remember}
    keep = {k: v for k, v in values.items()
            if k not in secret_names and v is not None and k not in one_shot}
    to_remember = {**{k: v for k, v in remembered.items() if k not in one_shot}, **keep}
    return Resolution(values, origin, secret_names, to_store, ask, to_remember, errors,
                      missing)


def _resolve_secret(p: Param, given: Mapping[str, Any], deployment: str,
                    secret: Callable[[str], str | None], replace: frozenset[str] | set[str],
                    generate: Callable[[int], str], values: dict[str, Any],
                    origin: dict[str, Origin], to_store: dict[str, str], ask: list[Param],
                    errors: list[Located]) -> None:
    stored = secret(p.name)
    value, origin[p.name] = stored, "stored"
    raw = given.get(p.name)
    if raw is not None:
        try:
            new = str(coerce(p, raw))
        except ParamValueError as e:
            errors.append(_error(f"parameter {p.name!r}: {e}"))
            return
        if stored is not None and stored != new and p.name not in replace:
            errors.append(_error(
                f"parameter {p.name!r}: deployment {deployment!r} already has a stored "
                f"secret of that name, and the value given differs; it is not replaced "
                f"silently. Leave the value out to use the stored one, or add "
                f"--replace-secret {p.name} to replace it"))
            return
        value, origin[p.name] = new, "given"
        if new != stored:
            to_store[p.name] = new
    if value is None and p.generate:
        value, origin[p.name] = generate(p.generate), "generated"
        to_store[p.name] = value
    if value is None:
        origin[p.name] = "ask" if p.is_required else "missing"
        if p.is_required:
            ask.append(p)
    values[p.name] = value


def permanent_conflict(p: Param, value: Any, locked: Mapping[str, Any],
                       deployment: str) -> str | None:
    """Why ``value`` is refused for a permanent parameter already locked to another one."""
    have = locked.get(p.name)
    if not p.permanent or have is None or have == value:
        return None
    return (f"parameter {p.name!r} is permanent in deployment {deployment!r}: it is {have!r} "
            f"and can never change "
            f"({p.permanent_reason or 'it is baked into data that already exists'}). "
            f"Keep {have!r}, or create a new deployment for {value!r}.")


def journal_params(values: Mapping[str, Any], secret_names: frozenset[str] | set[str]
                   ) -> dict[str, Any]:
    """Parameter values as journaled: a secret is ``{"$secret": name}``, never its value."""
    return {k: ({"$secret": k} if k in secret_names else v) for k, v in values.items()}


def is_secret_ref(v: Any) -> bool:
    """Whether a journaled value is a secret reference (see :func:`journal_params`)."""
    return isinstance(v, dict) and set(v) == {"$secret"}


def resume_changes(recorded: Mapping[str, Any], given: set[str], values: Mapping[str, Any],
                   secret_names: frozenset[str] | set[str]) -> list[tuple[str, Any, Any]]:
    """(name, recorded, now) for each value given on resume that differs from the one the
    run recorded (secrets never: their values are not recorded)."""
    return [(k, recorded[k], values.get(k)) for k in sorted(given)
            if k in recorded and k not in secret_names and recorded[k] != values.get(k)]


def should_remember(status: str) -> bool:
    """Whether a run that ended with ``status`` makes its values the deployment's own.

    A failed run (a step or gate failed, or the run was refused) may have failed because
    of a value it was given (a wrong operator_cidr locks SSH out): carrying it into the
    next run would repeat the failure silently. A run that passed, or that the operator
    paused or interrupted (state saved, values accepted), remembers. Resume always uses
    the values recorded in its own run, so nothing is lost either way.
    """
    return status in ("passed", "paused", "interrupted")
