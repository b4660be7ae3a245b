"""The repository layout of issue 21: ``runbooks/`` and ``assets/`` at the top level, carried
inside the wheel as the package's data, found by one module (``elematrix_tui/bundled.py``)
in a checkout and in an installed wheel alike."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tarfile
import tomllib
import types
import zipfile
from pathlib import Path

import pytest

from elematrix_tui import bundled
from tests.conftest import require

ROOT = Path(__file__).resolve().parent.parent
PKG = "elematrix_tui"
DATA = (bundled.RUNBOOKS, bundled.ASSETS)
# The only tracked file allowed to name the old in-package paths: the build mapping.
BUILD_MAPPING = "pyproject.toml"
# The old homes, in every spelling code or docs used for them (built here, so that this
# file does not match itself): a path, a module name, a path join, importlib.resources.
OLD = re.compile(
    "|".join([rf"{PKG}[/.]({'|'.join(DATA)})\b",
              rf"[\"']{PKG}[\"']\s*[/,]\s*[\"']({'|'.join(DATA)})",
              rf"[\"']{PKG}[\"']\)\.joinpath\([\"']({'|'.join(DATA)})"]))
# In the package's own code, a data folder found beside a module's __file__ (the old way).
BESIDE_FILE = re.compile(rf"__file__\).*[\"']({'|'.join(DATA)})[\"']")


def _tracked() -> list[str]:
    res = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True)
    require(res.returncode == 0, "a git checkout (git ls-files)")
    return [p for p in res.stdout.decode().split("\0") if p]


def test_nothing_tracked_names_the_old_paths() -> None:
    hits = []
    for rel in _tracked():
        if rel == BUILD_MAPPING or not (ROOT / rel).is_file():
            continue
        text = (ROOT / rel).read_bytes().decode("utf-8", "replace")
        for n, line in enumerate(text.splitlines(), 1):
            if OLD.search(line) or (rel.startswith(f"{PKG}/") and BESIDE_FILE.search(line)):
                hits.append(f"{rel}:{n}: {line.strip()}")
    assert not hits, ("the bundled runbooks and assets live at runbooks/ and assets/; ask "
                      "elematrix_tui.bundled for them:\n" + "\n".join(hits))


def test_the_data_folders_are_at_the_top_level_only() -> None:
    tracked = _tracked()
    for name in DATA:
        assert any(p.startswith(f"{name}/") for p in tracked), name
        assert not any(p.startswith(f"{PKG}/{name}/") for p in tracked), name


def test_one_place_resolves_them_in_a_checkout() -> None:
    from elematrix_tui.bundled import bundled_runbook_names as bundled_runbooks
    from elematrix_tui.engine.catalog import resolve_runbook as resolve_runbook_path
    from elematrix_tui.engine.containment import ASSETS_DIR
    from elematrix_tui.stack.render import template_root
    from elematrix_tui.ui.catalog import list_runbooks

    assert bundled.checkout_root() == ROOT
    assert bundled.runbooks_dir() == ROOT / "runbooks"
    assert bundled.assets_dir() == ROOT / "assets"
    assert ASSETS_DIR == ROOT / "assets"
    assert Path(str(template_root())) == ROOT / "assets" / "stack"
    names = sorted(p.stem for p in (ROOT / "runbooks").glob("*.yaml"))
    assert bundled_runbooks() == names and names
    assert [e.path for e in list_runbooks(ROOT / "no-user-dir") if e.source == "bundled"] == \
        [ROOT / "runbooks" / f"{n}.yaml" for n in names]
    assert resolve_runbook_path("poc-ec2") == ROOT / "runbooks" / "poc-ec2.yaml"


def test_the_build_lists_every_code_package_and_maps_the_data() -> None:
    # Mapping the data folders means listing packages by hand (find cannot see mapped ones);
    # a new code package missing from the list would silently be left out of the wheel.
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    code = {".".join(p.relative_to(ROOT).parent.parts)
            for p in (ROOT / PKG).rglob("__init__.py")}
    data = {f"{PKG}.{name}" for name in DATA}
    assert set(conf["packages"]) == code | data
    assert conf["package-dir"] == {f"{PKG}.{name}": name for name in DATA}
    assert set(conf["package-data"]) >= data


def _run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    assert res.returncode == 0, f"{cmd}: exit {res.returncode}\n{res.stdout[-3000:]}\n" \
                                f"{res.stderr[-3000:]}"
    return res  # type: ignore[no-any-return]


@pytest.mark.timeout(900)
def test_the_built_wheel_runs_from_outside_the_checkout(tmp_path: Path) -> None:
    """Build the sdist and, from it, the wheel (``python -m build``, as a release does);
    install the wheel into a fresh virtual environment; run the bundled runbooks by name
    from a directory outside the checkout, with nothing of the checkout on the path."""
    require(importlib.util.find_spec("build") is not None,
            "the 'build' package (in the dev extra: pip install -e '.[dev]')")
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)], timeout=600)
    [sdist] = dist.glob("*.tar.gz")
    [wheel] = dist.glob("*.whl")
    tracked = sorted(p for p in _tracked() if p.split("/")[0] in DATA)
    with tarfile.open(sdist) as tar:
        top = tar.getnames()[0].split("/")[0]
        in_sdist = {n.removeprefix(f"{top}/") for n in tar.getnames()}
    assert set(tracked) <= in_sdist, set(tracked) - in_sdist
    with zipfile.ZipFile(wheel) as z:
        in_wheel = set(z.namelist())
    assert {f"{PKG}/{p}" for p in tracked} <= in_wheel, {f"{PKG}/{p}" for p in tracked} - in_wheel
    assert not any(n.split("/")[0] in DATA for n in in_wheel)  # no top-level data packages
    # And the package itself, whole: every module (the hand-kept package list) and its data
    # (the .tcss stylesheets, py.typed), as tracked.
    code = {p for p in _tracked() if p.startswith(f"{PKG}/")}
    assert code <= in_wheel, code - in_wheel

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)], timeout=600)

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(HOME=str(tmp_path / "home"), PATH=f"{venv / 'bin'}:{env.get('PATH', '')}")
    site = _run([str(venv / "bin" / "python"), "-c",
                 "import json, elematrix_tui as p, elematrix_tui.bundled as b\n"
                 "from elematrix_tui.engine.containment import ASSETS_DIR\n"
                 "from elematrix_tui.stack.render import template_root\n"
                 "print(json.dumps([p.__file__, str(b.runbooks_dir()), str(b.assets_dir()),"
                 " str(ASSETS_DIR), str(template_root()), b.checkout_root()]))"],
                cwd=outside, env=env, timeout=120)
    pkg_file, runbooks, assets, assets2, templates, checkout = json.loads(site.stdout)
    pkg = Path(pkg_file).parent
    assert pkg.is_relative_to(venv) and checkout is None
    assert (runbooks, assets, assets2, templates) == (
        str(pkg / "runbooks"), str(pkg / "assets"), str(pkg / "assets"),
        str(pkg / "assets" / "stack"))

    elematrix = str(venv / "bin" / "elematrix")
    res = _run([elematrix, "validate", "poc-ec2", "teardown", "verify"], cwd=outside, env=env,
               timeout=120)
    for name in ("poc-ec2", "teardown", "verify"):
        assert f"{pkg / 'runbooks' / name}.yaml: ok" in res.stdout, res.stdout
    assert str(ROOT) not in res.stdout + res.stderr
    res = _run([elematrix, "plan", "poc-ec2", "--offline", "--deployment", "x",
                "--set", "operator_cidr=203.0.113.7/32"], cwd=outside, env=env, timeout=120)
    assert "Plan: runbook poc-ec2" in res.stdout
    # The stack was rendered from the wheel's templates (the images come from the compose).
    assert "image synapse: matrixdotorg/synapse:" in res.stdout
    assert str(ROOT) not in res.stdout + res.stderr


def test_a_stale_folder_in_the_package_never_shadows_the_checkout(tmp_path: Path) -> None:
    """An untracked runbooks folder left inside the package of a working tree (an editor's
    backup kept the old folder alive through a checkout) is ignored: the tracked top-level
    one wins. The lookup reads the package's location twice: ``_PACKAGE_DIR`` (for the
    checkout) and importlib.resources (for the package data); both point at the fake."""
    root = tmp_path / "repo"
    for d in ("runbooks", "assets", f"{PKG}/runbooks", f"{PKG}/assets"):
        (root / d).mkdir(parents=True)
    (root / "pyproject.toml").write_text("")
    saved = bundled._PACKAGE_DIR, bundled.resources
    bundled._data_dir.cache_clear()
    try:
        bundled._PACKAGE_DIR = root / PKG
        bundled.resources = types.SimpleNamespace(files=lambda _: root / PKG)  # type: ignore[assignment]
        assert bundled.checkout_root() == root
        assert bundled.runbooks_dir() == root / "runbooks"
        assert bundled.assets_dir() == root / "assets"
        # Not a checkout (no pyproject.toml beside the package): the package data.
        (root / "pyproject.toml").unlink()
        bundled._data_dir.cache_clear()
        assert bundled.checkout_root() is None
        assert bundled.runbooks_dir() == root / PKG / "runbooks"
    finally:
        bundled._PACKAGE_DIR, bundled.resources = saved
        bundled._data_dir.cache_clear()
    assert bundled.runbooks_dir() == ROOT / "runbooks"


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    # The README's first code block is the contract: its second line is the whole suite, and
    # .ci/run must run exactly that line (a second spelling would drift, e.g. the -n flags).
    block = re.search(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block is not None
    lines = [ln for ln in block.group(1).splitlines() if ln.strip()]
    assert len(lines) == 2, lines
    ci = [ln for ln in (ROOT / ".ci" / "run").read_text().splitlines()
          if ln.strip() and not ln.lstrip().startswith(("#", "set ", "cd ", "export "))]
    assert ci == [lines[1]], ci
