"""The opt-in file secret store under concurrent runs of different deployments (issue 20 #1).

Real processes, not threads: runs of different deployments are separate `elematrix`
processes that share one ``secrets.json``; a thread lock inside one process guards nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from elematrix_tui.engine.errors import InputError
from elematrix_tui.engine.secrets import SecretStore

WRITER = """
import sys
from elematrix_tui.engine.secrets import SecretStore
store = SecretStore("file")
dep = sys.argv[1]
for i in range(int(sys.argv[2])):
    store.set(dep, f"s{i}", f"{dep}-value-{i}")
"""


def test_sixteen_parallel_processes_lose_nothing(tmp_path: Path) -> None:
    n_proc, n_each = 16, 15
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, f"dep{i}", str(n_each)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ))
             for i in range(n_proc)]
    errors = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        if p.returncode != 0:
            errors.append(err[-400:])
    assert not errors, errors
    path = Path(os.environ["ELEMATRIX_CONFIG_DIR"]) / "secrets.json"
    data = json.loads(path.read_text())  # valid JSON
    for i in range(n_proc):
        assert data.get(f"dep{i}") == {f"s{k}": f"dep{i}-value-{k}" for k in range(n_each)}
    assert path.stat().st_mode & 0o77 == 0
    # No temporary file is left behind.
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"dep": "not a mapping"}'])
def test_a_store_that_does_not_parse_is_never_overwritten(content: str) -> None:
    path = Path(os.environ["ELEMATRIX_CONFIG_DIR"]) / "secrets.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    store = SecretStore("file")
    with pytest.raises(InputError, match=r"secrets\.json"):
        store.set("dep", "x", "value-123456")
    with pytest.raises(InputError, match=r"secrets\.json"):
        store.delete("dep", "x")
    assert path.read_text() == content
