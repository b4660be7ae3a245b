"""render_stack and the stack.render action: files, modes, secrets, diff, idempotency."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from elematrix_tui.actions.stack import Render
from elematrix_tui.engine.standalone import StandaloneContext
from elematrix_tui.stack.render import (
    MASK,
    SECRET_FILES,
    RenderError,
    render_files,
    render_stack,
    template_root,
)
from elematrix_tui.stack.values import SECRET_NAMES, StackValues

from .conftest import PARAM_SETS, SECRETS, render

DEFAULT = PARAM_SETS["default"]
EXPECTED_FILES = [
    "backup.sh", "docker-compose.yml", "element/config.json", "nginx/default.conf",
    "nginx/well-known/matrix/client", "postgres.env", "restore.sh",
    "synapse/homeserver.yaml", "synapse/log.config", "systemd/elematrix-backup.service",
    "systemd/elematrix-backup.timer", "systemd/elematrix-stack.service",
]


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_templates_are_package_resources() -> None:
    # importlib.resources: the same lookup works from a wheel.
    names = {e.name for e in template_root().iterdir()}
    assert "docker-compose.yml.j2" in names


def test_render_files_and_modes(tmp_path: Path) -> None:
    res = render_stack(DEFAULT, SECRETS, tmp_path / "stack")
    assert res.files == EXPECTED_FILES
    assert res.changed_files == EXPECTED_FILES
    assert res.previous is None
    for rel in EXPECTED_FILES:
        p = res.path / rel
        want = 0o600 if rel in SECRET_FILES else 0o755 if rel in ("backup.sh", "restore.sh") else 0o644
        assert _mode(p) == want, rel
        text = p.read_text()
        holds_secret = any(v in text for v in SECRETS.values())
        assert holds_secret == (rel in SECRET_FILES), rel
    assert _mode(res.path) == 0o700


def test_rerender_is_a_no_op_and_diff_masks_secrets(tmp_path: Path) -> None:
    out = tmp_path / "stack"
    render_stack(DEFAULT, SECRETS, out)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    again = render_stack(DEFAULT, SECRETS, out)
    assert again.changed_files == [] and again.diff == []
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before

    rotated = dict(SECRETS, form_secret="tstRotatedFormSecretN3b5V7c9X1z")
    res = render_stack({**DEFAULT, "brand": "Acme Chat"}, rotated, out)
    assert res.changed_files == ["element/config.json", "synapse/homeserver.yaml"]
    text = "\n".join(res.diff)
    assert '-  "brand": "Element",' in text and '+  "brand": "Acme Chat",' in text
    assert "--- a/element/config.json" in text and "+++ b/element/config.json" in text
    for value in [*SECRETS.values(), rotated["form_secret"]]:
        assert value not in text
    assert f'-form_secret: "{MASK}"' in text
    assert f'+form_secret: "{MASK} (changed)"' in text
    # The previous rendering is kept beside the new one.
    assert res.previous == tmp_path / "stack.previous"
    assert '"brand": "Element"' in (res.previous / "element/config.json").read_text()


def test_wrong_mode_on_secret_file_is_a_change(tmp_path: Path) -> None:
    out = tmp_path / "stack"
    render_stack(DEFAULT, SECRETS, out)
    (out / "postgres.env").chmod(0o644)
    res = render_stack(DEFAULT, SECRETS, out)
    assert res.changed_files == ["postgres.env"]
    assert _mode(out / "postgres.env") == 0o600


@pytest.mark.parametrize(("params", "needle"), [
    ({**DEFAULT, "server_name": "bad name"}, "server_name"),
    ({**DEFAULT, "public_address": "host:99999"}, "port"),
    ({**DEFAULT, "images": {"synapse": "matrixdotorg/synapse:latest"}}, "pinned"),
    ({**DEFAULT, "images": {"synapse": "matrixdotorg/synapse"}}, "pinned"),
    ({**DEFAULT, "backup_bucket": "Not_A_Bucket"}, "bucket"),
    ({**DEFAULT, "remote_dir": "/opt/../etc"}, "remote_dir"),
    ({**DEFAULT, "unknown": 1}, "unknown"),
    ({"server_name": "x.org"}, "public_address"),
])
def test_bad_values_are_refused(params: dict[str, object], needle: str) -> None:
    with pytest.raises(RenderError, match=needle):
        render_files(params, SECRETS)


def test_bad_or_missing_secrets_are_refused() -> None:
    with pytest.raises(RenderError, match="missing secrets: form_secret"):
        render_files(DEFAULT, {k: v for k, v in SECRETS.items() if k != "form_secret"})
    with pytest.raises(RenderError, match="macaroon_secret_key"):
        render_files(DEFAULT, dict(SECRETS, macaroon_secret_key='a"b: c\nd' * 4))


def test_undefined_names_are_errors(tmp_path: Path) -> None:
    """StrictUndefined: a template typo fails the render instead of rendering empty."""
    from jinja2 import UndefinedError

    from elematrix_tui.stack.render import _environment

    with pytest.raises(UndefinedError):
        _environment().from_string("{{ v.nope }}").render(v=StackValues(**DEFAULT))
    with pytest.raises(Exception, match=r"unsafe|access"):
        _environment().from_string("{{ v.__class__.__mro__ }}").render(
            v=StackValues(**DEFAULT))


def test_values_tuning_and_urls() -> None:
    v = StackValues(server_name="m.example.org:8448", public_address="http://1.2.3.4:8080/",
                    instance_type="t3.large")
    assert v.public_baseurl == "http://1.2.3.4:8080/"
    assert (v.cache_factor, v.shared_buffers) == (2.0, "512MB")
    assert v.signing_key_file == "m.example.org:8448.signing.key"
    assert StackValues(server_name="a.b", public_address="c.d",
                       instance_type="x9.huge").cache_factor == 1.0


# ---------------------------------------------------------------- the action


def _ctx(tmp_path: Path) -> StandaloneContext:
    return StandaloneContext(deployment_dir=tmp_path / "dep", deployment="staging")


def test_action_generates_secrets_renders_and_checks(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    action = Render()
    chk = ctx.check(action, DEFAULT)
    assert chk.in_sync is False
    assert "generate secret postgres_password" in chk.changes

    res = ctx.run(action, DEFAULT)
    assert res.status == "changed"
    assert set(ctx.secrets) == set(SECRET_NAMES)
    assert all(len(v) >= 40 for v in ctx.secrets.values())
    out = ctx.deployment_dir / "stack"
    assert res.outputs["path"] == str(out)
    assert res.outputs["files"] == EXPECTED_FILES
    assert res.outputs["changed_files"] == EXPECTED_FILES
    assert res.outputs["diff_lines"] > 100
    # The deployment name comes from the context unless given.
    assert "deployment staging" in (out / "docker-compose.yml").read_text()
    logged = "\n".join(line for _s, line in ctx.logs)
    for value in ctx.secrets.values():
        assert value not in logged, "secrets never reach the log"
    assert any(s == "diff" for s, _l in ctx.logs)

    # Same inputs, same keyring: in sync, and apply changes nothing.
    assert ctx.check(action, DEFAULT).in_sync is True
    again = ctx.run(action, DEFAULT)
    assert again.status == "ok" and again.outputs["changed_files"] == []

    # A changed parameter: check says what would change, apply shows the diff.
    changed = {**DEFAULT, "max_upload_size_mb": 100}
    chk = ctx.check(action, changed)
    assert chk.in_sync is False
    assert set(chk.changes) == {"update nginx/default.conf", "update synapse/homeserver.yaml"}
    ctx.logs.clear()
    res = ctx.run(action, changed)
    assert res.status == "changed"
    diff = [line for s, line in ctx.logs if s == "diff"]
    assert "+    client_max_body_size 100M;" in diff


def test_action_keeps_existing_secrets(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    ctx.secrets.update(SECRETS)
    res = ctx.run(Render(), {**DEFAULT, "out_dir": "elsewhere"})
    assert ctx.secrets == SECRETS
    hs = (ctx.deployment_dir / "elsewhere/synapse/homeserver.yaml").read_text()
    assert SECRETS["macaroon_secret_key"] in hs
    assert res.outputs["path"] == str(ctx.deployment_dir / "elsewhere")


def test_action_inputs_reject_unknown_keys(tmp_path: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        _ctx(tmp_path).run(Render(), {**DEFAULT, "sever_name": "typo"})


@pytest.mark.parametrize(("field", "value"), [
    ("deployment", "prod\nExecStart=/bin/evil"),
    ("backup_schedule", "daily\nExecStart=/bin/evil"),
    ("instance_type", "t3.medium\n"),
    ("logo_url", "javascript:alert(1)"),
])
def test_injection_through_values_is_refused(field: str, value: str) -> None:
    with pytest.raises(RenderError, match=field):
        render_files({**DEFAULT, field: value}, SECRETS)


def test_any_brand_renders_valid_files(tmp_path: Path) -> None:
    """Property: whatever the brand and URLs, config.json parses, round-trips, doctor is clean."""
    import json

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from elematrix_tui.stack.doctor import diagnose

    counter = iter(range(10_000))

    @settings(max_examples=40, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(brand=st.text(min_size=0, max_size=300),
           path=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126),
                        min_size=1, max_size=40))
    def check(brand: str, path: str) -> None:
        url = "https://example.org/" + path
        res = render_stack({**DEFAULT, "brand": brand, "logo_url": url}, SECRETS,
                           tmp_path / f"s{next(counter)}")
        cfg = json.loads((res.path / "element/config.json").read_text())
        assert cfg["brand"] == brand and cfg["branding"]["auth_header_logo_url"] == url
        assert diagnose(res.path) == []

    check()


def test_the_admin_port_is_a_parameter_and_8008_the_default(tmp_path: Path) -> None:
    """A second stack beside the first on one host (the restore drill on the rehearsal)
    needs its own host port for Synapse's admin API; the default renders as before."""
    default = (render(tmp_path, PARAM_SETS["default"], "a").path / "docker-compose.yml")
    assert '"127.0.0.1:8008:8008"' in default.read_text()
    other = render(tmp_path, {**PARAM_SETS["default"], "admin_port": 8018}, "b").path
    text = (other / "docker-compose.yml").read_text()
    # Only the host side moves: Synapse listens on 8008 in its container as always.
    assert '"127.0.0.1:8018:8008"' in text and "127.0.0.1:8008" not in text
    assert "http://localhost:8008/health" in text
    with pytest.raises(RenderError):
        render(tmp_path, {**PARAM_SETS["default"], "admin_port": 0}, "c")
