"""Hypothesis-generated garbage never produces a traceback: the loader either accepts a
runbook or raises RunbookError with located messages; the CLI answers exit 0 or 2."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from elematrix_tui.actions import default_registry
from elematrix_tui.engine.errors import RunbookError
from elematrix_tui.engine.loader import load_params_file, load_runbook

REGISTRY = default_registry()
KEYS = ["runbook", "params", "phases", "id", "steps", "gates", "action", "with", "outputs",
        "when", "retry", "timeout", "name", "type", "default", "attempts", "local.noop",
        "local.write", "{{ params.x }}", "{{ steps.a.path }}", "x-any", "cleanup"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=30), st.sampled_from(KEYS))
trees = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), inner, max_size=5)),
    max_leaves=25)

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def _load(path: Path) -> None:
    try:
        load_runbook(path, REGISTRY)
    except RunbookError as e:
        assert e.errors and all(str(err) for err in e.errors)


@FUZZ
@given(text=st.text(max_size=400))
def test_arbitrary_text(tmp_path_factory: Any, text: str) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "rb.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    _load(path)


@FUZZ
@given(tree=trees)
def test_arbitrary_yaml_structures(tmp_path_factory: Any, tree: Any) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "rb.yaml"
    path.write_text(yaml.safe_dump(tree, allow_unicode=True))
    _load(path)


@FUZZ
@given(phases=st.lists(st.dictionaries(st.sampled_from(KEYS), trees, max_size=4), max_size=3))
def test_runbook_shaped_garbage(tmp_path_factory: Any, phases: list[Any]) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "rb.yaml"
    path.write_text(yaml.safe_dump({"runbook": "f", "phases": phases}, allow_unicode=True))
    _load(path)


@FUZZ
@given(values=st.dictionaries(st.text(max_size=10), trees, max_size=5))
def test_params_file_garbage(tmp_path_factory: Any, values: dict[str, Any]) -> None:
    d = tmp_path_factory.mktemp("fuzz")
    rb = d / "rb.yaml"
    rb.write_text("runbook: p\nparams:\n  - {name: x, type: cidr}\n  - {name: n, type: int, "
                  "default: 1}\nphases:\n  - id: one\n    steps: [{id: s, action: local.noop}]\n")
    params = d / "params.yaml"
    params.write_text(yaml.safe_dump(values, allow_unicode=True))
    try:
        load_params_file(params, load_runbook(rb, REGISTRY))
    except RunbookError as e:
        assert e.errors


def test_cli_on_binary_and_odd_files(elematrix: str, tmp_path: Path) -> None:
    cases = {"binary.yaml": bytes(range(256)), "bom.yaml": b"\xef\xbb\xbfrunbook: x\n",
             "deep.yaml": b"a: " + b"[" * 2000, "alias.yaml": b"a: &a [*a]\n"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        res = subprocess.run([elematrix, "validate", str(tmp_path / name)],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 2, (name, res.stdout, res.stderr)
        assert "Traceback" not in res.stderr, (name, res.stderr)
