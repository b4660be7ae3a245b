"""The import contracts of docs/architecture.md, read from the code's own imports (AST).

Every import counts: module level, inside functions, and under ``if TYPE_CHECKING:`` (a
type-only import still ties two modules together, and is where the old app <-> screens
cycle hid). The contracts:

1. ``engine`` imports no sibling package (actions, ui, stack, cli, practice, headless) and
   no SDK; of the package it may import only itself and ``bundled`` (a standard-library
   leaf that says where the bundled data is).
2. ``actions`` never imports ``ui`` (nor the cli, headless or practice front ends).
3. ``ui`` imports only ``engine``, the action registry (``elematrix_tui.actions``
   itself, never an action module), ``audit`` and ``drill``.
4. No import cycle anywhere in the package.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = "elematrix_tui"
SDKS = frozenset({"textual", "rich", "boto3", "botocore", "paramiko", "nio", "httpx"})
FRONT_ENDS = (f"{PKG}.cli", f"{PKG}.headless", f"{PKG}.practice", f"{PKG}.drill")


def _modules(root: Path, pkg: str) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package under ``root``."""
    out: dict[str, Path] = {}
    for path in sorted((root / pkg).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import in the file: package modules resolved
    to the most specific module that exists, others by their top-level name."""
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield _specific(alias.name, known), node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                up = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join([*up, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield (sub if sub in known else _specific(target, known)), node.lineno


def _specific(dotted: str, known: set[str]) -> str:
    parts = dotted.split(".")
    while parts and ".".join(parts) not in known:
        parts.pop()
    return ".".join(parts) if parts else dotted.split(".")[0]


def graph(root: Path, pkg: str = PKG) -> dict[str, dict[str, int]]:
    """module -> {imported module (package ones dotted, others top-level): first line}."""
    mods = _modules(root, pkg)
    known = set(mods)
    out: dict[str, dict[str, int]] = {}
    for name, path in mods.items():
        edges: dict[str, int] = {}
        for target, line in _imports(name, path, known):
            if target != name:
                edges.setdefault(target, line)
        out[name] = edges
    return out


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def contract_breaches(g: dict[str, dict[str, int]], pkg: str = PKG) -> list[str]:
    """Every import that breaks contracts 1-3, as ``module:line imports target (why)``."""
    engine, actions, ui = f"{pkg}.engine", f"{pkg}.actions", f"{pkg}.ui"
    bundled = f"{pkg}.bundled"
    out: list[str] = []
    for mod, edges in sorted(g.items()):
        for target, line in sorted(edges.items()):
            top = target.split(".")[0]
            why = None
            if _inside(mod, engine):
                if top in SDKS:
                    why = "the engine imports no SDK"
                elif top == pkg and not (_inside(target, engine) or target == bundled):
                    why = "the engine imports no sibling package"
            elif _inside(mod, actions):
                if _inside(target, ui) or any(_inside(target, f) for f in FRONT_ENDS):
                    why = "actions never import the UI or a front end"
            elif _inside(mod, ui) and top == pkg and not (
                    _inside(target, ui) or _inside(target, engine) or target == actions
                    or _inside(target, f"{pkg}.audit") or _inside(target, f"{pkg}.drill")):
                why = "the UI imports only the engine, the action registry, audit and drill"
            if target == bundled and mod == bundled:
                continue
            if why:
                out.append(f"{mod}:{line} imports {target} ({why})")
    if any(t.split(".")[0] == pkg for t in g.get(bundled, {})):
        out.append(f"{bundled} imports the package (it must stay a standard-library leaf)")
    return out


def cycles(g: dict[str, dict[str, int]], pkg: str = PKG) -> list[list[str]]:
    """The package's import cycles: each strongly connected component of two or more
    modules (Tarjan), sorted."""
    nodes = sorted(g)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(t for t in g[v] if t in g):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in nodes:
        if v not in index:
            visit(v)
    return sorted(out)


def test_the_import_contracts_hold() -> None:
    assert contract_breaches(graph(ROOT)) == []


def test_no_import_cycle_in_the_package() -> None:
    assert cycles(graph(ROOT)) == []


def test_the_ui_reaches_the_actions_only_through_the_registry() -> None:
    g = graph(ROOT)
    ui_to_actions = {t for m, e in g.items() if _inside(m, f"{PKG}.ui") for t in e
                     if _inside(t, f"{PKG}.actions")}
    assert ui_to_actions <= {f"{PKG}.actions"}
    # The registry module itself needs only the engine's Registry.
    assert {t for t in g[f"{PKG}.actions"] if t.startswith(PKG)} == {f"{PKG}.engine.registry"}


# Which part of the package may import which: the table of docs/architecture.md.
PARTS: dict[str, set[str]] = {
    "engine": {"bundled"},
    "stack": {"bundled"},
    "actions": {"engine", "stack", "bundled"},
    "ui": {"engine", "actions", "audit", "drill"},
    "audit": {"engine", "actions"},
    "headless": {"engine", "actions"},
    "history": {"engine"},
    "planview": {"engine"},
    "practice": {"engine", "headless", "practice_dlm"},
    "practice_dlm": set(),
    "drill": {"engine", "headless", "actions"},
    "bundled": set(),
}
FRONT_DOOR = "cli"  # may import any part: it is where the parts meet


def test_the_parts_import_only_what_the_architecture_page_says() -> None:
    g = graph(ROOT)
    seen: dict[str, set[str]] = {}
    for mod, edges in g.items():
        part = mod.split(".")[1] if "." in mod else ""
        if part == FRONT_DOOR:
            continue
        for target in edges:
            if target.startswith(PKG + ".") and target.split(".")[1] != part:
                seen.setdefault(part, set()).add(target.split(".")[1])
    extra = {p: sorted(t - PARTS.get(p, set())) for p, t in seen.items()
             if t - PARTS.get(p, set())}
    assert extra == {}, f"new arrows between parts (update docs/architecture.md): {extra}"


def test_one_place_builds_a_runner() -> None:
    """``Runner(...)`` is called only by ``engine/wiring.py`` (the CLI, headless, practice
    and the TUI all go through ``build_runner``); there were four copies."""
    calls = []
    for name, path in _modules(ROOT, PKG).items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and (
                    (isinstance(node.func, ast.Name) and node.func.id == "Runner")
                    or (isinstance(node.func, ast.Attribute) and node.func.attr == "Runner")):
                calls.append(f"{name}:{node.lineno}")
    assert [c.split(":")[0] for c in calls] == [f"{PKG}.engine.wiring"], calls


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.parametrize(("files", "breach"), [
    ({"engine/a.py": "from ..ui import app\n"}, "the engine imports no sibling package"),
    ({"engine/a.py": "def f():\n    import boto3\n"}, "the engine imports no SDK"),
    ({"engine/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                     "    from ..headless import Printer\n"},
     "the engine imports no sibling package"),
    ({"actions/a.py": "from ..ui.app import App\n"}, "actions never import the UI"),
    ({"ui/a.py": "from ..actions.aws import Call\n"}, "the UI imports only the engine"),
    ({"ui/a.py": "from ..stack import render\n"}, "the UI imports only the engine"),
])
def test_the_checker_sees_a_breach(tmp_path: Path, files: dict[str, str], breach: str) -> None:
    base = {"__init__.py": "", "engine/__init__.py": "", "ui/__init__.py": "",
            "ui/app.py": "", "actions/__init__.py": "", "actions/aws.py": "",
            "stack/__init__.py": "", "stack/render.py": "", "headless.py": ""}
    _write(tmp_path / "pkg", {**base, **files})
    found = contract_breaches(graph(tmp_path, "pkg"), "pkg")
    assert len(found) == 1 and breach in found[0], found


def test_the_checker_sees_a_type_only_cycle(tmp_path: Path) -> None:
    # The shape of the old app <-> screens cycle: the screen imported the app for a type.
    _write(tmp_path / "pkg", {
        "__init__.py": "", "ui/__init__.py": "",
        "ui/app.py": "from .screens.run import RunScreen\n",
        "ui/screens/__init__.py": "",
        "ui/screens/run.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                             "    from ..app import App\n",
    })
    assert cycles(graph(tmp_path, "pkg"), "pkg") == [["pkg.ui.app", "pkg.ui.screens.run"]]
