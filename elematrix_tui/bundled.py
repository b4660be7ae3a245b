"""Where the bundled runbooks and assets are: the one place every module asks.

In the repository they live at the top level (``runbooks/``, ``assets/``: data an operator
reads and edits, beside the code). A built wheel carries them inside the package, as its
``runbooks`` and ``assets`` data folders: ``pyproject.toml`` maps the two folders into the
package at build time (``[tool.setuptools.package-dir]``). These functions give
the same folders in both cases: from a checkout (an editable install, or tests run from
the source tree) the top-level ones, otherwise the package data found through
importlib.resources.

Only the standard library is imported here: the engine asks this module too and must
never load the UI or an SDK (tests/engine/test_import_hygiene.py).
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

# The two data folders, named once: a folder of the checkout root and of the package.
RUNBOOKS = "runbooks"
ASSETS = "assets"

# This package's directory; its parent is the checkout root when run from the source tree.
_PACKAGE_DIR = Path(__file__).resolve().parent


def checkout_root() -> Path | None:
    """The repository this package is imported from, or None for an installed wheel.

    A checkout is recognised by the ``pyproject.toml`` beside the package and the data
    folder itself; site-packages has neither (and a ``runbooks`` folder another
    distribution put in site-packages is never mistaken for ours).
    """
    root = _PACKAGE_DIR.parent
    if (root / "pyproject.toml").is_file() and (root / RUNBOOKS).is_dir():
        return root
    return None


@cache
def _data_dir(name: str) -> Path:
    # The checkout first: a stale, untracked elematrix_tui/<name> left in a working tree
    # (an editor's backup kept the old folder alive) must never shadow the tracked one.
    root = checkout_root()
    if root is not None and (root / name).is_dir():
        return root / name
    packaged = resources.files(__package__ or "elematrix_tui").joinpath(name)
    if packaged.is_dir():
        # Installed wheels are unpacked on a file system; str() is the real path.
        return Path(str(packaged))
    raise FileNotFoundError(
        f"the bundled {name} folder is missing: neither {_PACKAGE_DIR.parent / name} "
        f"(a checkout) nor {_PACKAGE_DIR / name} (an installed package) exists; "
        "reinstall elematrix-tui")


def runbooks_dir() -> Path:
    """The folder of the bundled runbooks (``poc-ec2.yaml``, ``teardown.yaml``, ...)."""
    return _data_dir(RUNBOOKS)


def assets_dir() -> Path:
    """The folder of the bundled assets (``aws/``, ``cloud-init/``, ``stack/``, ...)."""
    return _data_dir(ASSETS)


def bundled_runbook_names() -> list[str]:
    """The names (``poc-ec2``) of the bundled runbooks, sorted."""
    return sorted(p.stem for p in runbooks_dir().glob("*.yaml"))
