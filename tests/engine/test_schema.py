"""`elematrix schema`: JSON Schemas editors use, generated from the loader's own models.

The schema may be looser than the loader (values under ``with:`` can be expressions), but
never stricter: every runbook the loader accepts must pass it, or an editor would mark a
good runbook red. And it must catch what an editor is for: a mistyped key, an unknown
action, a missing required input.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from elematrix_tui.actions import default_registry
from elematrix_tui.bundled import runbooks_dir
from elematrix_tui.engine.errors import InputError
from elematrix_tui.engine.loader import load_runbook
from elematrix_tui.engine.schema import MODELINE, SCHEMA_FILE, dumps, params_schema, runbook_schema

from ..conftest import VENV_BIN

TESTS = Path(__file__).resolve().parent.parent


def _validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return runbook_schema(default_registry())


def test_the_committed_schema_is_the_generated_one(schema: dict[str, Any]) -> None:
    # One home: the models. The file beside the runbooks is derived; regenerate it with
    # `elematrix schema runbook > runbooks/runbook.schema.json` when an action changes.
    committed = (runbooks_dir() / SCHEMA_FILE).read_text()
    assert committed == dumps(schema), "runbooks/runbook.schema.json is stale: regenerate it"


def test_bundled_runbooks_carry_the_modeline_and_pass(schema: dict[str, Any]) -> None:
    v = _validator(schema)
    books = sorted(runbooks_dir().glob("*.yaml"))
    assert books
    for path in books:
        text = path.read_text()
        assert text.splitlines()[0] == MODELINE, path.name
        errors = [e.message for e in v.iter_errors(yaml.safe_load(text))]
        assert errors == [], (path.name, errors[:3])


def _test_runbooks() -> list[Path]:
    return [p for p in sorted(TESTS.rglob("*.yaml"))
            if "realworld" not in p.parts and re.search(r"^runbook:", p.read_text(), re.M)]


def test_never_stricter_than_the_loader(schema: dict[str, Any]) -> None:
    """Every runbook under tests/ the loader accepts passes; each one it refuses for a key
    or an action the schema can see is refused by the schema too."""
    v = _validator(schema)
    accepted = refused = 0
    for path in _test_runbooks():
        try:
            load_runbook(path, default_registry())
        except InputError:
            refused += 1
            continue
        accepted += 1
        errors = [e.message for e in v.iter_errors(yaml.safe_load(path.read_text()))]
        assert errors == [], (str(path), errors[:3])
    assert accepted >= 5 and refused >= 10
    for name in ("step-unknown-key", "step-bad-input-key", "step-unknown-action",
                 "unknown-top-key", "phase-unknown-key", "param-unknown-key",
                 "step-missing-action", "step-missing-input"):
        doc = yaml.safe_load((TESTS / "data" / "bad" / f"{name}.yaml").read_text())
        assert list(v.iter_errors(doc)), f"{name}: the loader refuses it, the schema did not"


def test_a_mistyped_with_key_is_named(schema: dict[str, Any]) -> None:
    doc = {"runbook": "x", "x-anchor": {"any": 1},
           "phases": [{"id": "p", "steps": [
               {"id": "a", "action": "local.noop", "with": {"mesage": "hi"}}]}]}
    errors = list(_validator(schema).iter_errors(doc))
    assert any("mesage" in e.message for e in errors), [e.message for e in errors]
    doc["phases"][0]["steps"][0]["with"] = {}
    assert list(_validator(schema).iter_errors(doc)) == []


def test_params_schema_types_each_parameter() -> None:
    rb = load_runbook(runbooks_dir() / "poc-ec2.yaml", default_registry())
    v = _validator(params_schema(rb))
    ints = [p for p in rb.params if p.type == "int"]
    bools = [p for p in rb.params if p.type == "bool"]
    good: dict[str, Any] = {p.name: p.default for p in rb.params
                            if p.default is not None and p.type != "secret"}
    assert [e.message for e in v.iter_errors(good)] == []
    assert list(v.iter_errors({ints[0].name: "many"}))
    assert list(v.iter_errors({bools[0].name: "perhaps"}))
    assert list(v.iter_errors({"no_such_param": 1}))
    patterned = next(p for p in rb.params if p.pattern and p.type == "string")
    # The engine matches the whole value: a valid value plus a newline is refused.
    assert list(v.iter_errors({patterned.name: "ok\nrm -rf /"}))
    assert _validator(params_schema())  # without a runbook: any names, scalar values
    with_secret = load_runbook(TESTS / "data" / "params-runbook.yaml", default_registry())
    secrets = {p.name for p in with_secret.params if p.type == "secret"}
    assert secrets and not secrets & set(params_schema(with_secret)["properties"])


def test_cli_prints_the_schemas_and_refuses_bad_input(tmp_path: Path) -> None:
    exe = str(VENV_BIN / "elematrix")
    out = subprocess.run([exe, "schema", "runbook"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["title"] == "elematrix runbook"
    out = subprocess.run([exe, "schema", "params", "poc-ec2"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "server_name" in json.loads(out.stdout)["properties"]
    bad = subprocess.run([exe, "schema", "params", str(tmp_path / "nope.yaml")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "no such runbook" in bad.stderr
    assert "Traceback" not in bad.stderr
    bad = subprocess.run([exe, "schema", "nonsense"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
