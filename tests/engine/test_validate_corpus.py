"""Every malformed runbook and parameter file gives exit 2 and a located message."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from elematrix_tui.bundled import runbooks_dir

DATA = Path(__file__).resolve().parent.parent / "data"
BAD = sorted((DATA / "bad").glob("*.yaml"))
BAD_PARAMS = sorted((DATA / "badparams").glob("*.yaml"))


def _expectation(path: Path) -> tuple[str, str]:
    m = re.match(r"# expect: (\d+:\d+) \| (.+)", path.read_text().splitlines()[0])
    assert m, f"{path} has no '# expect: LINE:COL | message' header"
    return m.group(1), m.group(2)


def test_corpus_is_large_enough() -> None:
    assert len(BAD) + len(BAD_PARAMS) >= 40


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_runbook_is_located(path: Path) -> None:
    from elematrix_tui.actions import default_registry
    from elematrix_tui.engine.errors import RunbookError
    from elematrix_tui.engine.loader import load_runbook

    where, message = _expectation(path)
    with pytest.raises(RunbookError) as exc:
        load_runbook(path, default_registry())
    texts = [str(e) for e in exc.value.errors]
    assert any(t.startswith(f"{path}:{where}: ") and message in t for t in texts), texts


@pytest.mark.parametrize("path", BAD_PARAMS, ids=[p.stem for p in BAD_PARAMS])
def test_bad_params_file_is_located(path: Path) -> None:
    from elematrix_tui.actions import default_registry
    from elematrix_tui.engine.errors import RunbookError
    from elematrix_tui.engine.loader import load_params_file, load_runbook

    where, message = _expectation(path)
    rb = load_runbook(DATA / "params-runbook.yaml", default_registry())
    with pytest.raises(RunbookError) as exc:
        load_params_file(path, rb)
    texts = [str(e) for e in exc.value.errors]
    assert any(t.startswith(f"{path}:{where}: ") and message in t for t in texts), texts


def test_cli_validate_exit_2_and_every_error_at_once(elematrix: str, tmp_path: Path) -> None:
    # Three independent mistakes in one file: all are reported in one go.
    rb = tmp_path / "multi.yaml"
    rb.write_text(
        "runbook: multi\nparams:\n  - {name: a, type: string, default: x}\nphases:\n"
        "  - id: one\n    steps:\n"
        "      - {id: s1, action: local.nope}\n"
        "      - {id: s2, action: local.write, with: {path: '{{ params.b }}'}}\n"
        "      - {id: s3, action: local.noop, retry: {attempts: 0}}\n")
    res = subprocess.run([elematrix, "validate", str(rb)], capture_output=True, text=True)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert any(":7:" in x and "unknown action 'local.nope'" in x for x in lines)
    assert any(":8:" in x and "params.b is not a declared parameter" in x for x in lines)
    assert any(":9:" in x and "attempts" in x for x in lines)
    assert "Traceback" not in res.stderr


def test_cli_bad_params_file_exit_2(elematrix: str) -> None:
    path = DATA / "badparams" / "bad-cidr.yaml"
    res = subprocess.run([elematrix, "run", str(DATA / "params-runbook.yaml"), "--deployment",
                          "t", "--params", str(path)], capture_output=True, text=True)
    assert res.returncode == 2
    assert f"{path}:2:16:" in res.stderr and "Traceback" not in res.stderr


def test_bundled_runbooks_validate(elematrix: str) -> None:
    folder = runbooks_dir()
    paths = sorted(folder.glob("*.yaml"))
    if not paths:
        pytest.skip("no bundled runbooks yet")
    res = subprocess.run([elematrix, "validate", *map(str, paths)], capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr
