"""JSON Schemas of the runbook format and of a parameter file, for editors.

Generated from the same pydantic models the loader validates with (``engine/model.py``)
and from each registered action's ``Inputs`` model, so an editor with the YAML language
server completes and checks step keys as the loader would. The loader stays the one
authority: the schema can only be as strict as a static schema can be. What it does not
check, on purpose:

- the *values* under a step's ``with:``: they may be ``{{ expressions }}`` rendered at run
  time, so only the key names (and the required ones) are checked, never a value's type;
- references between steps (``steps.x.y``), gates and phase order, locks: the loader's.

``elematrix schema runbook`` prints the runbook schema; ``elematrix schema params
[RUNBOOK]`` the schema of a ``--params`` file, typed per parameter when a runbook is
given. The bundled runbooks point at ``runbooks/runbook.schema.json`` with a modeline.
"""

from __future__ import annotations

import json
from typing import Any

from .model import Param, Runbook
from .registry import Registry

# The line an editor reads: the YAML language server's modeline (its README, "Using inlined
# schema"). Relative to the runbook file, so it holds in the checkout and in the wheel.
SCHEMA_FILE = "runbook.schema.json"
MODELINE = f"# yaml-language-server: $schema={SCHEMA_FILE}"
_DRAFT = "https://json-schema.org/draft/2020-12/schema"


def runbook_schema(registry: Registry) -> dict[str, Any]:
    """The runbook format, with the action names and each action's ``with:`` keys."""
    schema = Runbook.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = _DRAFT
    schema["title"] = "elematrix runbook"
    # Top-level `x-` keys are free (YAML anchors), as in Compose files.
    schema["patternProperties"] = {"^x-": {}}
    step = schema["$defs"]["Step"]
    names = registry.names()
    step["properties"]["action"] = {
        "type": "string", "enum": names,
        "description": "the kind of step (one of the registered actions)"}
    step["allOf"] = [_with_for(name, registry) for name in names]
    return schema


def _with_for(name: str, registry: Registry) -> dict[str, Any]:
    """``if action == name then with: has exactly that action's input keys``."""
    inputs = registry.get(name).Inputs.model_json_schema(by_alias=True, mode="validation")
    props = {key: {"description": _describe(spec)}
             for key, spec in inputs.get("properties", {}).items()}
    with_schema: dict[str, Any] = {"type": "object", "properties": props,
                                   "additionalProperties": False}
    if inputs.get("required"):
        with_schema["required"] = list(inputs["required"])
    return {"if": {"properties": {"action": {"const": name}}, "required": ["action"]},
            "then": {"properties": {"with": with_schema}}}


def _describe(spec: dict[str, Any]) -> str:
    """An input's description, else its declared type in words (values are not checked)."""
    if spec.get("description"):
        return str(spec["description"])
    kinds = [s.get("type") or s.get("$ref", "").rsplit("/", 1)[-1]
             for s in spec.get("anyOf", [spec])]
    return " or ".join(str(k) for k in kinds if k) or "any value"


def params_schema(rb: Runbook | None = None) -> dict[str, Any]:
    """A ``--params`` file: a mapping of parameter names to values.

    With a runbook, each of its parameters is typed (integer, boolean, one of its choices,
    its pattern) and no other name is allowed; secrets are left out (they live in the
    keyring and are asked for, never written in a file).
    """
    schema: dict[str, Any] = {"$schema": _DRAFT, "title": "elematrix parameters",
                              "type": "object"}
    if rb is None:
        schema["additionalProperties"] = {"type": ["string", "integer", "boolean"]}
        return schema
    schema["title"] = f"parameters of runbook {rb.runbook}"
    schema["properties"] = {p.name: _param(p) for p in rb.params if p.type != "secret"}
    schema["additionalProperties"] = False
    return schema


def _param(p: Param) -> dict[str, Any]:
    out: dict[str, Any] = {"description": p.help} if p.help else {}
    if p.type == "int":
        out["type"] = "integer"
        if p.min is not None:
            out["minimum"] = p.min
        if p.max is not None:
            out["maximum"] = p.max
    elif p.type == "bool":
        out["type"] = "boolean"
    elif p.type == "choice":
        out["enum"] = list(p.choices or [])
    else:
        out["type"] = "string"
        if p.pattern:
            # The engine matches the whole value (re.fullmatch); JSON Schema's pattern
            # searches, so it is anchored here to mean the same.
            out["pattern"] = f"^(?:{p.pattern})$"
    if p.default is not None:
        out["default"] = p.default
    return out


def dumps(schema: dict[str, Any]) -> str:
    """The schema as committed and printed: stable key order, one trailing newline."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
