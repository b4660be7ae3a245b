"""Run ``matrix.validate`` as the operator would, in a process of its own.

The shaped-link tests run this inside the operator's network namespace
(``ip netns exec NS python -m tests.matrix.operator_gate SPEC.json``): it opens the SSH
port forward to Synapse's admin API with the real ``ssh.forward`` action (through the
shaped link, like ``admin_tunnel`` in poc-ec2.yaml), then runs the gate, and prints one
JSON object: status, the gate's outputs or failure, its wall time, and its log lines.

SPEC: {"ssh": {ssh.* inputs}, "admin_port": 8008, "validate": {matrix.validate inputs},
"host_ssh": true|false} - with host_ssh the gate gets the same SSH target as ``host_ssh``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from elematrix_tui.actions.matrix import Validate
from elematrix_tui.actions.ssh import Forward
from elematrix_tui.engine.action import ActionFailed
from elematrix_tui.engine.standalone import StandaloneContext


def main(spec_path: str) -> int:
    spec: dict[str, Any] = json.loads(Path(spec_path).read_text())
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        ctx = StandaloneContext(deployment_dir=Path(d))
        try:
            fwd = ctx.run(Forward(), {**spec["ssh"], "remote_host": "127.0.0.1",
                                      "remote_port": spec["admin_port"]})
            inputs = dict(spec["validate"], admin_url=fwd.outputs["url"])
            if spec.get("host_ssh"):
                inputs["host_ssh"] = spec["ssh"]
                inputs["host_url"] = spec["host_url"]
            t0 = time.monotonic()
            try:
                res = ctx.run(Validate(), inputs)
                out = {"status": res.status, "outputs": res.outputs}
            except ActionFailed as e:
                out = {"status": "failed", "error": str(e), "diagnosis": e.diagnosis}
            out["gate_s"] = round(time.monotonic() - t0, 2)
        finally:
            ctx.close()
        out["logs"] = [line for _, line in ctx.logs]
        out["checks"] = {n["check"]: n for k, n in ctx.notes if k == "gate.check"}
    print(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
