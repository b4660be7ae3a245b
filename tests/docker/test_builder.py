"""The local image builder (scripts/build_images.py): one table, a cache, registry images kept.

- the tags come from ``elematrix_tui.stack.values.IMAGES`` (read by the builder without
  importing the package): a bumped pin is what the next build makes;
- a second build is a no-op (every image's input-hash label matches);
- a tag without our label (what ``docker pull`` leaves) is never overwritten, shown with
  an unlabeled image tagged under a scratch namespace of this test's own.
"""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from pathlib import Path

import pytest

from elematrix_tui.stack.values import IMAGES
from tests.support.docker import builder, docker

B = builder()

# A cold image build (first run without scripts/setup.sh) happens in the first test's
# fixture setup: about 4-5 minutes on a 2-core machine, more than the suite's default.
pytestmark = pytest.mark.timeout(900)


def test_tags_come_from_the_one_table() -> None:
    assert B.pinned_images() == IMAGES
    refs = [i.ref for i in B.plan(IMAGES)]
    assert sorted(refs) == sorted(IMAGES.values())


def test_a_bumped_pin_is_followed(tmp_path: Path) -> None:
    values = tmp_path / "values.py"
    bumped = dict(IMAGES, synapse="matrixdotorg/synapse:v1.170.0")
    values.write_text(f"IMAGES: dict[str, str] = {bumped!r}\n")
    table = B.pinned_images(values)
    assert table["synapse"] == "matrixdotorg/synapse:v1.170.0"
    synapse = next(i for i in B.plan(table) if i.key == "synapse")
    assert synapse.args == {"SYNAPSE_VERSION": "1.170.0"}


def test_flavour_uids_follow_the_tag() -> None:
    # The official postgres image: uid 70 on Alpine, 999 on Debian (its Dockerfiles).
    assert B.build_args("postgres", "postgres:15.10-alpine")["PG_UID"] == "70"
    assert B.build_args("postgres", "postgres:15.10")["PG_UID"] == "999"
    with pytest.raises(B.BuildError, match="only PostgreSQL 15"):
        B.build_args("postgres", "postgres:16.4-alpine")


def test_decision() -> None:
    ours = {"Config": {"Labels": {B.LABEL: "abc"}}}
    assert B.decide(None, "abc") == "build"
    assert B.decide(ours, "abc") == "cached"
    assert B.decide(ours, "def") == "build"
    # Pulled from a registry: no label of ours, whatever else it carries.
    assert B.decide({"Config": {"Labels": None}}, "abc") == "foreign"
    assert B.decide({"Config": {"Labels": {"org.opencontainers.image.url": "x"}}}, "a") == (
        "foreign")


def test_second_build_is_a_no_op(docker_images: dict[str, str]) -> None:
    ids = {ref: docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()
           for ref in docker_images}
    again = B.ensure_images()
    assert set(again.values()) <= {"cached", "foreign"}, again
    for ref, image_id in ids.items():
        assert docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip() == image_id


def _empty_image(ref: str) -> None:
    """An image with no label of ours, as ``docker pull`` would leave one."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("registry-image")
        data = b"from a registry\n"
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    docker("import", "-", ref, input_=buf.getvalue())


def test_a_registry_image_is_never_overwritten(docker_images: dict[str, str],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    namespace = f"docker-images-test-{uuid.uuid4().hex[:8]}"
    nginx = next(i for i in B.plan(IMAGES, namespace) if i.key == "nginx")
    _empty_image(nginx.ref)
    try:
        before = json.loads(docker("image", "inspect", nginx.ref).stdout)[0]["Id"]
        base_ref = B.BASE_REF
        base_id = docker("image", "inspect", "--format", "{{.Id}}", base_ref).stdout.strip()
        assert B.build_one(nginx, base_ref, base_id) == "foreign"
        after = json.loads(docker("image", "inspect", nginx.ref).stdout)[0]["Id"]
        assert after == before
        out = capsys.readouterr().out
        assert "was not built here" in out and "left alone" in out
    finally:
        docker("image", "rm", nginx.ref, check=False)


def test_no_engine_fails_under_ci_and_skips_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    """CI never skips silently: without an engine, engine() fails the test there."""
    import tests.support.docker as support

    eng = support.engine_module()

    def no_engine(quiet: bool = False) -> None:
        raise eng.EngineError("dockerd is not installed")

    monkeypatch.setattr(support, "_ENGINE", None)
    monkeypatch.setattr(eng, "start", no_engine)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI never skips"):
        support.engine()
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception, match="dockerd is not installed"):
        support.engine()


def test_changed_inputs_rebuild_and_unchanged_do_not(docker_images: dict[str, str],
                                                     tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A changed context file means a new build; the same inputs again mean none."""
    import shutil

    contexts = tmp_path / "images"
    shutil.copytree(B.IMAGES_DIR, contexts)
    monkeypatch.setattr(B, "IMAGES_DIR", contexts)
    namespace = f"docker-images-test-{uuid.uuid4().hex[:8]}"
    nginx = next(i for i in B.plan(IMAGES, namespace) if i.key == "nginx")
    base_id = docker("image", "inspect", "--format", "{{.Id}}", B.BASE_REF).stdout.strip()
    try:
        assert B.build_one(nginx, B.BASE_REF, base_id) == "built"
        first = docker("image", "inspect", "--format", "{{.Id}}", nginx.ref).stdout.strip()
        assert B.build_one(nginx, B.BASE_REF, base_id) == "cached"
        (contexts / "nginx" / "index.html").write_text("<p>changed</p>\n")
        assert B.build_one(nginx, B.BASE_REF, base_id) == "built"
        second = docker("image", "inspect", "--format", "{{.Id}}", nginx.ref).stdout.strip()
        assert second != first
        # The replaced image does not linger untagged.
        assert docker("image", "inspect", first, check=False).returncode != 0
        page = docker("run", "--rm", "--network", "none", "--entrypoint", "cat", nginx.ref,
                      "/usr/share/nginx/html/index.html").stdout
        assert page == "<p>changed</p>\n"
    finally:
        docker("image", "rm", nginx.ref, check=False)
        docker("image", "prune", "-f", "--filter", f"label={B.UPSTREAM_LABEL}={nginx.ref}",
               check=False)
