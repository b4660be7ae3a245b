"""Where a runbook's file inputs may point: the one containment rule every action calls.

A runbook is trusted code (docs/runbook-format.md, "Trust"), but its file inputs are
contained so that a typo or a copied runbook cannot quietly read or overwrite the
operator's own files:

- an **asset** (``trust_policy``, ``inline_policies``, ``user_data``, an SSM parameter's
  ``asset``, a bucket ``policy``) names a file in the bundled assets directory, relative
  to it; an absolute path, ``~``, or ``..`` that leaves it is refused;
- a **deployment path** (``stack.render out_dir``, ``ssh.upload source``) is relative to the
  deployment's own directory, or absolute inside it; anything that leaves it is refused.

Both are checked twice: lexically when the inputs are validated (so ``elematrix validate``
names the step and the line of a literal escape) and again, with symlinks resolved, when
the action opens the path.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Annotated

from pydantic import AfterValidator

from ..bundled import assets_dir
from .action import ActionFailed

# The bundled assets: assets/ of the checkout, or the package data of an installed wheel
# (elematrix_tui/bundled.py is the one place that decides which).
ASSETS_DIR = assets_dir()


class PathEscape(ActionFailed):
    """A file input that points outside the directory it is contained to."""


def _escapes(given: str) -> bool:
    """True when a relative path climbs above its start (``../x``, ``a/../../x``)."""
    depth = 0
    for part in PurePosixPath(given).parts:
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in (".", ""):
            depth += 1
    return False


def asset_problem(given: str) -> str | None:
    """Why ``given`` cannot name a bundled asset, or None when it can (lexically)."""
    if "\0" in given:
        return "holds a NUL character"
    if given.startswith("~") or os.path.isabs(given):
        return "must be relative to the bundled assets directory, not an absolute path"
    if _escapes(given):
        return "leaves the bundled assets directory ('..')"
    return None


def deployment_problem(given: str) -> str | None:
    """Why ``given`` cannot be a deployment path, or None when it may be (lexically).

    An absolute path passes here (a step's output such as ``steps.render.path`` is
    absolute); :func:`deployment_path` checks that it lies inside the deployment dir.
    """
    if "\0" in given:
        return "holds a NUL character"
    if given.startswith("~"):
        return "must be inside the deployment directory, not under your home directory"
    if not os.path.isabs(given) and _escapes(given):
        return "leaves the deployment directory ('..')"
    return None


def _inside(root: Path, path: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def asset_path(given: str, *, what: str = "asset") -> Path:
    """The bundled asset ``given`` names; PathEscape if it is outside the assets dir."""
    problem = asset_problem(given)
    root = ASSETS_DIR.resolve()
    path = (root / given).resolve()
    if problem is None and not _inside(root, path):
        problem = "resolves (through a link) outside the bundled assets directory"
    if problem:
        raise PathEscape(f"{what} {given!r} {problem}",
                         diagnosis="A runbook's asset paths name files of the bundled assets "
                                   f"directory ({root}); nothing else on this machine is read.",
                         fix="use a bundled asset such as aws/ec2-trust-policy.json")
    if not path.is_file():
        raise PathEscape(f"{what} {given!r}: no such bundled asset",
                         fix=f"the bundled assets are under {root}")
    return path


def deployment_path(deployment_dir: Path, given: str, *, what: str) -> Path:
    """``given`` inside the deployment dir (relative paths start there); else PathEscape."""
    problem = deployment_problem(given)
    root = Path(deployment_dir).resolve()
    path = Path(given) if os.path.isabs(given) else root / given
    path = path.resolve()
    if problem is None and not _inside(root, path):
        problem = "is outside the deployment directory"
    if problem:
        raise PathEscape(f"{what} {given!r} {problem}",
                         diagnosis=f"Renderings and uploads stay inside the deployment's own "
                                   f"directory ({root}).",
                         fix="give a path relative to the deployment directory, e.g. 'stack'")
    return path


def _check_asset(value: str) -> str:
    problem = asset_problem(value)
    if problem:
        raise ValueError(f"{value!r} {problem}")
    return value


def _check_deployment(value: str) -> str:
    problem = deployment_problem(value)
    if problem:
        raise ValueError(f"{value!r} {problem}")
    return value


def json_problem(path: Path) -> str | None:
    """Why a JSON asset does not parse (``LINE:COL: message``), or None when it does."""
    import json

    try:
        json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        return f"cannot be read ({e})"
    except json.JSONDecodeError as e:
        return f"is not JSON (asset line {e.lineno}, column {e.colno}: {e.msg})"
    return None


def _check_json_asset(value: str) -> str:
    _check_asset(value)
    path = ASSETS_DIR / value
    if not path.is_file():
        raise ValueError(f"{value!r}: no such bundled asset (they are under {ASSETS_DIR})")
    problem = json_problem(path)
    if problem:
        raise ValueError(f"{value!r} {problem}")
    return value


# Input field types: the lexical check runs wherever the inputs are validated.
AssetPath = Annotated[str, AfterValidator(_check_asset)]
# A policy document: also checked to exist and to be JSON (placeholders sit in strings).
JsonAssetPath = Annotated[str, AfterValidator(_check_json_asset)]
DeploymentPath = Annotated[str, AfterValidator(_check_deployment)]
