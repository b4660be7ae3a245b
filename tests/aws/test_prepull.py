"""user-data pre-pulls the stack's pinned images (the critical path: docs/latency-model.md)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from elematrix_tui.stack.values import IMAGES

USER_DATA = Path(__file__).resolve().parents[2] / "assets" / "cloud-init" / "user-data.yaml"


def _script() -> str:
    doc = yaml.safe_load(USER_DATA.read_text())
    files = {f["path"]: f for f in doc["write_files"]}
    return str(files["/usr/local/sbin/elematrix-bootstrap"]["content"])


def test_user_data_pulls_exactly_the_pinned_images() -> None:
    m = re.search(r'^PREPULL="([^"]+)"$', _script(), re.M)
    assert m, "no PREPULL line in the bootstrap script"
    assert m.group(1).split() == [IMAGES[k] for k in ("postgres", "synapse", "element",
                                                       "nginx")]


def test_the_pre_pull_never_holds_cloud_init() -> None:
    script = _script()
    line = next(x for x in script.splitlines() if '"$PREPULL"' in x)
    # stdin from /dev/null, stdout and stderr to the log, in the background; before the
    # marker the SSH gate waits for.
    assert "</dev/null" in line and ">>\"$STATE/prepull.log\" 2>&1 &" in line
    assert script.index('"$PREPULL"') < script.index('> "$STATE/cloud-init.done"')
