"""The one home of the operational files' facts (stack/layout.py) and the placeholders
stack.adapt fills with generated secrets (issue 13, items 1 and 2).

The layout of the bundled stack is read back from its own rendering exactly as stack.adapt
reads an operator's stack, so the two can never drift; an operator's stack gets backup.sh,
restore.sh and the units from the same templates, with its own service names, paths and
mounts. Placeholders of Synapse's own secrets are replaced by generated values, shown
masked; a secret shared with someone else, or a weak value somebody chose, is refused.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from elematrix_tui.actions.stack_adapt import Adapt, AdaptInputs, adapt
from elematrix_tui.engine.errors import InputError
from elematrix_tui.engine.standalone import StandaloneContext
from elematrix_tui.stack.layout import bundled_layout, layout_of
from elematrix_tui.stack.load import load_stack
from elematrix_tui.stack.render import OPS_FILES, diff_trees, render_files, render_ops, write_tree
from elematrix_tui.stack.values import SECRET_NAMES, StackValues
from tests.stack.test_realworld import corpus  # noqa: F401  (the fixture)

VALUES = {"server_name": "chat.example.org", "public_address": "203.0.113.9",
          "deployment": "lay", "backup_bucket": "elematrix-lay-123456789012"}
SECRETS = {n: f"{n[:6]}-0123456789abcdefXYZ" for n in SECRET_NAMES}


def _layout_of_tree(root: Path):  # type: ignore[no-untyped-def]
    stack = load_stack(root)
    syn = next(s for s in stack.services("synapse") if s.name == "synapse")
    pg = next(s for s in stack.services("postgres") if s.name == "postgres")
    assert stack.homeserver is not None
    return layout_of(stack, syn, pg, stack.homeserver)


def test_the_bundled_layout_is_what_the_bundled_compose_file_mounts(tmp_path: Path) -> None:
    """bundled_layout restates the compose template's facts: read back from a rendering
    the way stack.adapt reads an operator's stack, it is the same."""
    write_tree(tmp_path / "s", render_files(VALUES, SECRETS))
    assert _layout_of_tree(tmp_path / "s") == bundled_layout(StackValues(**VALUES))


def test_ops_files_follow_the_layout(tmp_path: Path) -> None:
    from dataclasses import replace

    v = StackValues(**VALUES)
    lay = replace(bundled_layout(v), synapse_service="matrix", postgres_service="db",
                  db_name="matrixdb", db_user="matrixuser", signing_key="/keys/k.key",
                  media_store="/data/media", homeserver="conf/homeserver.yaml",
                  synapse_owned=(("conf", True), ("log.yaml", False)))
    ops = render_ops(v, lay)
    assert set(ops) == set(OPS_FILES)
    backup, restore = ops["backup.sh"], ops["restore.sh"]
    assert "dc exec -T db pg_dump -U matrixuser -d matrixdb --no-owner" in backup
    assert "SIGNING_KEY=/keys/k.key" in backup and "dc exec -T matrix tar -C /data/media" in backup
    assert "-C \"$WORK\" ./conf/homeserver.yaml" in restore
    assert 'CREATE DATABASE matrixdb OWNER matrixuser' in restore
    assert "--entrypoint sh matrix -c" in restore and "dc stop matrix" in restore
    assert "chown -R 991:991 /data/media" in restore
    unit = ops["systemd/elematrix-stack.service"]
    assert "ExecStartPre=/usr/bin/chown -R 991:991 /opt/elematrix/stack/conf\n" in unit
    assert "ExecStartPre=/usr/bin/chown -R 991:991 /opt/elematrix/stack/log.yaml\n" in unit
    assert lay.owners == {"conf/*": "991:991", "log.yaml": "991:991"}
    for rel in ("backup.sh", "restore.sh"):
        (tmp_path / rel).write_text(ops[rel])
        subprocess.run(["bash", "-n", str(tmp_path / rel)], check=True)


def test_an_empty_secret_line_does_not_mask_the_next_line() -> None:
    """Regression: the secret-line pattern's \\s* ran over the newline of an empty
    `POSTGRES_PASSWORD=` and masked the line after it (a comment, here) instead."""
    _, diff = diff_trees({".env": "POSTGRES_PASSWORD=\n\n# keep me\n"},
                         {".env": "POSTGRES_PASSWORD=abc0123456789defXYZ\n\n# keep me\n"}, {})
    assert "-POSTGRES_PASSWORD=" in diff and '+POSTGRES_PASSWORD="********"' in diff
    assert not any("keep me" in line and line[0] in "+-" for line in diff), diff


# --- placeholders -------------------------------------------------------------------

YG = "yguenneugues--matrix-docker"


@pytest.fixture
def yg(corpus: Path, tmp_path: Path) -> Path:  # noqa: F811
    """The corpus stack whose Synapse secrets are changeme_* and whose .env has an empty
    POSTGRES_PASSWORD, in tmp, without its Keycloak login (the identity provider's client
    secret can never be generated) and with the log config its author did not publish."""
    src = tmp_path / "yg"
    shutil.copytree(corpus / YG, src)
    for p in [src, *src.rglob("*")]:
        p.chmod(p.stat().st_mode | 0o200)
    hs = src / "synapse" / "homeserver.yaml"
    text = hs.read_text()
    hs.write_text(text[:text.index("oidc_providers:")]
                  + text[text.index("# Password authentication"):])
    (src / "synapse" / "log.config").write_text("version: 1\nroot:\n  level: INFO\n")
    return src


def _ctx(tmp_path: Path) -> StandaloneContext:
    c = StandaloneContext(deployment_dir=tmp_path / "deployment")
    c.deployment_dir.mkdir()
    return c


def _inputs(src: Path) -> AdaptInputs:
    return AdaptInputs(source=str(src), server_name="example.com",
                       public_address="203.0.113.9", deployment="yg",
                       backup_bucket="elematrix-yg-123456789012")


def test_placeholders_get_generated_secrets(yg: Path, tmp_path: Path) -> None:
    from elematrix_tui.stack.doctor import diagnose

    ctx = _ctx(tmp_path)
    check = Adapt().check(ctx, _inputs(yg))
    text = "\n".join(check.changes)
    for name in SECRET_NAMES:
        assert f"generate secret {name} for the placeholder at {yg}/synapse/" in text, text
    assert '-POSTGRES_PASSWORD=' in text and '+POSTGRES_PASSWORD="********"' in text
    assert '+registration_shared_secret: "******** (changed)"' in text
    assert ctx.secrets == {} and not (ctx.deployment_dir / "stack").exists()

    res = Adapt().apply(ctx, _inputs(yg))
    assert set(ctx.secrets) == set(SECRET_NAMES)
    out = ctx.deployment_dir / "stack"
    hs = (out / "synapse" / "homeserver.yaml").read_text()
    for name in ("registration_shared_secret", "macaroon_secret_key", "form_secret"):
        assert f'{name}: "{ctx.secrets[name]}"' in hs
    password = ctx.secrets["postgres_password"]
    # One value on both sides: Synapse's database.args and PostgreSQL's .env.
    assert f"password: {password}" in hs
    assert f"POSTGRES_PASSWORD={password}\n" in (out / ".env").read_text()
    assert "changeme" not in hs.split("oidc")[0]
    for rel in ("synapse/homeserver.yaml", ".env"):
        assert (out / rel).stat().st_mode & 0o777 == 0o600
    logged = "\n".join(line for _, line in ctx.logs)
    assert "generated secret form_secret for the placeholder at" in logged
    assert not any(v in logged for v in ctx.secrets.values())
    assert res.outputs["owners"] == {"synapse/homeserver.yaml": "991:991",
                                     "synapse/log.config": "991:991"}
    assert res.outputs["signing_key"] == "/data/signing.key"
    # Synapse's named volume on /data starts root-owned: the copy chowns it first.
    compose = (out / "docker-compose.yml").read_text()
    assert 'entrypoint: ["/bin/sh", "-c", "chown 991:991 /data && exec /start.py"]' in compose
    assert "dc exec -T synapse tar -C /data/media_store" in (out / "backup.sh").read_text()
    rules = {f.rule for f in diagnose(out) if f.severity == "error"}
    assert not rules & {"EM010", "EM017"}, rules
    # A second run takes the generated secrets back from the keyring: nothing changes.
    assert Adapt().check(ctx, _inputs(yg)).in_sync is True


def test_a_weak_secret_somebody_chose_is_refused_not_replaced(yg: Path) -> None:
    hs = yg / "synapse" / "homeserver.yaml"
    hs.write_text(hs.read_text().replace('"changeme_form_secret"', '"hunter2"'))
    with pytest.raises(InputError) as e:
        adapt(_inputs(yg))
    assert f"{hs}:53:1: form_secret is too short to be a generated secret" in str(e.value)


def test_a_stack_with_its_own_backup_script_is_refused(yg: Path, tmp_path: Path) -> None:
    (yg / "backup.sh").write_text("#!/bin/sh\n")
    ctx = _ctx(tmp_path)
    with pytest.raises(InputError, match=f"{yg}/backup.sh: your stack has its own backup.sh"):
        Adapt().apply(ctx, _inputs(yg))
    assert not (ctx.deployment_dir / "stack").exists() and ctx.secrets == {}


def test_a_compose_file_below_the_stack_directory_is_refused(yg: Path) -> None:
    """The deploy steps and the scripts run docker compose in the stack's top directory."""
    (yg / "deploy").mkdir()
    for name in ("docker-compose.yml", ".env", "synapse", "nginx"):
        (yg / name).rename(yg / "deploy" / name)
    with pytest.raises(InputError) as e:
        adapt(_inputs(yg))
    assert (f"{yg}/deploy/docker-compose.yml:29:1: `synapse` is defined in "
            "deploy/docker-compose.yml") in str(e.value), str(e.value)
    assert len(e.value.errors) == 1


def test_a_placeholder_no_line_edit_can_reach_is_refused_located(yg: Path) -> None:
    """A block scalar: the value is not on the key's line, so no line edit replaces it."""
    hs = yg / "synapse" / "homeserver.yaml"
    hs.write_text(hs.read_text().replace('form_secret: "changeme_form_secret"',
                                         "form_secret: >-\n  changeme"))
    with pytest.raises(InputError) as e:
        adapt(_inputs(yg))
    assert f"{hs}:53:1: form_secret: a generated secret cannot be put here" in str(e.value)


def test_a_placeholder_in_a_flow_mapping_is_replaced(yg: Path, tmp_path: Path) -> None:
    hs = yg / "synapse" / "homeserver.yaml"
    text = hs.read_text()
    start, end = text.index("database:\n"), text.index("\n# Logging")
    hs.write_text(text[:start] + "database: {name: psycopg2, args: {user: synapse, "
                  "password: changeme, database: synapse, host: postgres}}\n" + text[end:])
    ctx = _ctx(tmp_path)
    Adapt().apply(ctx, _inputs(yg))
    out = (ctx.deployment_dir / "stack" / "synapse" / "homeserver.yaml").read_text()
    assert f"password: {ctx.secrets['postgres_password']}, database: synapse" in out
