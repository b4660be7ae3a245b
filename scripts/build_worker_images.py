#!/usr/bin/env python3
"""Build the two extra images a Synapse worker stack needs on a machine without a registry.

    python3 scripts/build_worker_images.py          build what is missing or stale

- ``elematrix-local/redis`` (``scripts/images/redis``): the official ``redis`` image's
  contract on Debian bookworm's redis-server; in production ElastiCache takes its place.
- ``elematrix-local/synapse-workers`` (``scripts/images/synapse-workers``): our
  ``matrixdotorg/synapse`` stand-in plus Synapse's ``[redis]`` extra, which upstream's
  image carries and a worker needs, and matrix-org's S3 storage provider module.

The tags are read (parsed, not imported) from ``elematrix_tui/stack/workers.py``, their
one home. Building, caching by input hash, the label and the lock are those of
``scripts/build_images.py`` (docs/test-images.md); the four stack images are ensured
first, since synapse-workers is built FROM the Synapse image.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
WORKERS_PY = HERE.parent / "elematrix_tui" / "stack" / "workers.py"


def _builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("elematrix_build_images",
                                                  HERE / "build_images.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("elematrix_build_images", mod)
    spec.loader.exec_module(mod)
    return mod


_NAMES = ("REDIS_IMAGE", "SYNAPSE_WORKERS_IMAGE", "S3_STORAGE_PROVIDER")


def worker_image_refs(path: Path = WORKERS_PY) -> dict[str, str]:
    """``REDIS_IMAGE``, ``SYNAPSE_WORKERS_IMAGE`` and ``S3_STORAGE_PROVIDER`` (the pip
    requirement installed into the latter) of workers.py, without importing it."""
    out: dict[str, str] = {}
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            t = node.targets[0]
            if isinstance(t, ast.Name) and t.id in _NAMES:
                out[t.id] = str(ast.literal_eval(node.value))
    if len(out) != len(_NAMES):
        raise SystemExit(f"{path}: {', '.join(_NAMES)} must be defined")
    return out


def ensure_worker_images() -> dict[str, str]:
    """Build the Redis and synapse-workers images when missing or stale; {ref: outcome}."""
    b = _builder()
    refs = worker_image_refs()
    done = dict(b.ensure_images())
    synapse_ref = b.pinned_images()["synapse"]
    _, syn_tag = b.split_ref(synapse_ref)
    with b.build_lock():
        base_ref, base_id = b.ensure_base()
        redis = b.Image("redis", refs["REDIS_IMAGE"], refs["REDIS_IMAGE"], {})
        done[redis.ref] = b.build_one(redis, base_ref, base_id)
        info = b.inspect(synapse_ref)
        if info is None:
            raise b.BuildError(f"{synapse_ref} is missing after ensure_images")
        sw = b.Image("synapse-workers", refs["SYNAPSE_WORKERS_IMAGE"],
                     refs["SYNAPSE_WORKERS_IMAGE"],
                     {"SYNAPSE_VERSION": syn_tag.removeprefix("v"),
                      "S3_STORAGE_PROVIDER": refs["S3_STORAGE_PROVIDER"]})
        done[sw.ref] = b.build_one(sw, synapse_ref, str(info["Id"]))
    return done


if __name__ == "__main__":
    try:
        for ref, what in ensure_worker_images().items():
            print(f"images: {ref}: {what}")
    except Exception as e:  # the builder's BuildError: say it, exit 1
        print(f"images: {e}", file=sys.stderr)
        sys.exit(1)
