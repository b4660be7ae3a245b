"""stack.adapt: the operator's own stack, adapted to HTTP-only into the deployment's state dir.

The action directly (StandaloneContext, the engine's own context for one step) and through
the real command line (`elematrix run` on tests/stack/data/adapt.yaml). The operator's
stack is tests/data/stacks/tls-research (a TLS stack built as the research's), copied to
tmp so its bytes and mtimes can be compared before and after.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from elematrix_tui.actions.stack_adapt import Adapt, AdaptInputs
from elematrix_tui.engine.errors import InputError
from elematrix_tui.engine.standalone import StandaloneContext

DATA = Path(__file__).resolve().parents[1] / "data" / "stacks"
RUNBOOK = Path(__file__).resolve().parent / "data" / "adapt.yaml"
SERVER = "chat.acme-corp.example"
SECRETS = {  # as written in tests/data/stacks/tls-research/synapse-data/homeserver.yaml
    "registration_shared_secret": "mQ4xW8kR2vT7yB3nZ6cH9jD1fS5gL0pA",
    "macaroon_secret_key": "tY6nB2kM9wQ4rL7pX1zC3hJ8fD5sG0aV",
    "form_secret": "cH3jL8pX1zQ6wR9tY2nB5kM7vD4fS0gA",
    "postgres_password": "Xk4mQ8vN2pR7tW3yZ6bC9hJ1",
}


def _snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def operator_stack(tmp_path: Path) -> Path:
    src = tmp_path / "my-stack"
    shutil.copytree(DATA / "tls-research", src)
    return src


@pytest.fixture
def ctx(tmp_path: Path) -> StandaloneContext:
    c = StandaloneContext(deployment_dir=tmp_path / "deployment")
    c.deployment_dir.mkdir()
    return c


def _inputs(src: Path, server_name: str = SERVER) -> AdaptInputs:
    return AdaptInputs(source=str(src), server_name=server_name,
                       public_address="203.0.113.9")


def test_adapts_into_the_state_dir_and_leaves_the_operators_files(
        operator_stack: Path, ctx: StandaloneContext) -> None:
    before = _snapshot(operator_stack)
    check = Adapt().check(ctx, _inputs(operator_stack))
    assert check.in_sync is False
    text = "\n".join(check.changes)
    # The whole diff of the adaptation, against the operator's files: the research's changes.
    assert "-    listen 443 ssl http2;" in text
    assert '+public_baseurl: "http://203.0.113.9/"' in text
    assert "-  certbot:" in text
    assert '+            "base_url": "http://203.0.113.9",' in text
    assert not any(s in text for s in SECRETS.values())
    assert not (ctx.deployment_dir / "stack").exists()  # the check wrote nothing
    assert ctx.secrets == {}

    res = Adapt().apply(ctx, _inputs(operator_stack))
    assert res.status == "changed"
    out = ctx.deployment_dir / "stack"
    assert res.outputs["path"] == str(out)
    # stack.render's outputs, with the layout facts the deploy steps read (the same keys).
    assert set(res.outputs) == {"path", "files", "changed_files", "diff_lines", "owners",
                                "signing_key", "synapse_service", "postgres_service"}
    # What Synapse mounts from this stack gets its uid, not a hard-wired synapse/.
    assert res.outputs["owners"] == {"synapse-data/*": "991:991"}
    assert res.outputs["signing_key"] == "/data/chat.acme-corp.example.signing.key"
    assert ctx.secrets == SECRETS
    logged = "\n".join(line for _, line in ctx.logs)
    assert "-    listen 443 ssl http2;" in logged
    assert not any(s in logged for s in SECRETS.values())
    assert not any(s in repr(res.outputs) for s in SECRETS.values())

    hs = yaml.safe_load((out / "synapse-data" / "homeserver.yaml").read_text())
    assert hs["public_baseurl"] == "http://203.0.113.9/"
    assert hs["registration_shared_secret"] == SECRETS["registration_shared_secret"]
    assert (out / ".env").read_bytes() == (operator_stack / ".env").read_bytes()
    assert "certbot" not in yaml.safe_load((out / "docker-compose.yml").read_text())["services"]
    for rel in ("synapse-data/homeserver.yaml", ".env"):
        assert (out / rel).stat().st_mode & 0o777 == 0o600, rel
    assert _snapshot(operator_stack) == before

    # A second run: the diff is empty, the check says in place, nothing is rewritten.
    again = Adapt().check(ctx, _inputs(operator_stack))
    assert again.in_sync is True and again.changes == []
    mtimes = _snapshot(out)
    res2 = Adapt().apply(ctx, _inputs(operator_stack))
    assert res2.status == "ok" and res2.outputs["changed_files"] == []
    assert _snapshot(out) == mtimes
    assert _snapshot(operator_stack) == before


def test_a_password_compose_takes_from_the_shell_goes_to_the_copys_env(
        operator_stack: Path, ctx: StandaloneContext) -> None:
    # Without the .env, compose would take POSTGRES_PASSWORD from the deploy-time shell,
    # which the host never has: the copy's .env carries Synapse's own database password.
    (operator_stack / ".env").unlink()
    check = Adapt().check(ctx, _inputs(operator_stack))
    assert "+++ b/.env" in check.changes and '+POSTGRES_PASSWORD="********"' in check.changes
    Adapt().apply(ctx, _inputs(operator_stack))
    env = ctx.deployment_dir / "stack" / ".env"
    assert env.read_text().endswith(f"POSTGRES_PASSWORD={SECRETS['postgres_password']}\n")
    assert env.stat().st_mode & 0o777 == 0o600
    assert not (operator_stack / ".env").exists()
    assert Adapt().check(ctx, _inputs(operator_stack)).in_sync is True


def test_the_adapted_copy_passes_the_doctor(operator_stack: Path,
                                            ctx: StandaloneContext) -> None:
    from elematrix_tui.stack.doctor import diagnose

    Adapt().apply(ctx, _inputs(operator_stack))
    assert [f.format_text() for f in diagnose(ctx.deployment_dir / "stack")
            if f.severity == "error"] == []


def test_another_server_name_is_refused_located(operator_stack: Path,
                                                ctx: StandaloneContext) -> None:
    with pytest.raises(InputError) as e:
        Adapt().check(ctx, _inputs(operator_stack, server_name="203.0.113.9"))
    msg = str(e.value)
    assert f"{operator_stack}/synapse-data/homeserver.yaml:1:1: server_name is " \
           f"'{SERVER}'" in msg
    assert f"--set server_name={SERVER}" in msg
    assert not (ctx.deployment_dir / "stack").exists() and ctx.secrets == {}


def test_a_missing_secret_is_refused_located(operator_stack: Path,
                                             ctx: StandaloneContext) -> None:
    hs = operator_stack / "synapse-data" / "homeserver.yaml"
    hs.write_text("".join(line for line in hs.read_text().splitlines(keepends=True)
                          if not line.startswith("registration_shared_secret")))
    with pytest.raises(InputError) as e:
        Adapt().apply(ctx, _inputs(operator_stack))
    assert f"{hs}: no registration_shared_secret in homeserver.yaml" in str(e.value)
    assert not (ctx.deployment_dir / "stack").exists() and ctx.secrets == {}


def test_a_keyring_holding_other_secrets_is_refused(operator_stack: Path,
                                                    ctx: StandaloneContext) -> None:
    ctx.secrets["form_secret"] = "another-one"
    assert Adapt().check(ctx, _inputs(operator_stack)).in_sync is None
    with pytest.raises(InputError, match="other values for form_secret"):
        Adapt().apply(ctx, _inputs(operator_stack))
    assert not (ctx.deployment_dir / "stack").exists()
    assert ctx.secrets == {"form_secret": "another-one"}


@pytest.mark.parametrize("source", ["relative/stack", "/nonexistent/stack"])
def test_a_bad_source_is_refused(ctx: StandaloneContext, source: str) -> None:
    with pytest.raises(InputError, match="stack_source"):
        Adapt().check(ctx, AdaptInputs(source=source, server_name=SERVER,
                                       public_address="203.0.113.9"))


def _run(elematrix: str, src: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([elematrix, "run", str(RUNBOOK), "--deployment", "mine", "--yes",
                           "--set", f"stack_source={src}", "--set",
                           "public_address=203.0.113.9", *args],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ))


def test_adapt_via_cli(elematrix: str, state_dir: Path, operator_stack: Path) -> None:
    before = _snapshot(operator_stack)
    r = _run(elematrix, operator_stack, "--set", f"server_name={SERVER}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "+++ b/nginx/element.conf" in r.stdout
    assert "GATE [ok] doctor" in r.stdout
    ddir = state_dir / "deployments" / "mine"
    journal = b"".join(p.read_bytes() for p in ddir.glob("journal.sqlite*"))
    reports = b"".join(p.read_bytes() for p in ddir.rglob("*") if p.is_file()
                       and "stack" not in p.relative_to(ddir).parts)
    for s in SECRETS.values():
        assert s not in r.stdout + r.stderr
        assert s.encode() not in journal
        assert s.encode() not in reports
    assert _snapshot(operator_stack) == before

    r2 = _run(elematrix, operator_stack, "--set", f"server_name={SERVER}")
    assert r2.returncode == 0, r2.stdout + r2.stderr
    assert "+++ b/" not in r2.stdout


def test_resume_keeps_the_adapted_copy(elematrix: str, state_dir: Path,
                                       operator_stack: Path, tmp_path: Path) -> None:
    marker = tmp_path / "fixed"
    r = _run(elematrix, operator_stack, "--set", f"server_name={SERVER}",
             "--set", f"pass_file={marker}")
    assert r.returncode == 1, r.stdout + r.stderr
    out = state_dir / "deployments" / "mine" / "stack"
    copy = _snapshot(out)
    marker.touch()
    r2 = subprocess.run([elematrix, "resume", "--deployment", "mine", "--yes"],
                        capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert r2.returncode == 0, r2.stdout + r2.stderr
    assert "+++ b/" not in r2.stdout
    assert _snapshot(out) == copy


def test_refusal_via_cli_exits_2_and_writes_nothing(elematrix: str, state_dir: Path,
                                                    operator_stack: Path) -> None:
    r = _run(elematrix, operator_stack, "--set", "server_name=other.example")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "homeserver.yaml:1:1: server_name is 'chat.acme-corp.example'" in r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert not (state_dir / "deployments" / "mine" / "stack").exists()


# The public real-world stacks (tests/stack/test_realworld.py finds them; never copied
# here). None can be adapted mechanically as published: each is refused for what needs its
# operator, every message at its file (and line where the doctor knows it), and nothing is
# written or stored.
from tests.stack.test_realworld import corpus  # noqa: E402,F401  (the fixture)

# stack -> (server_name it carries, messages the refusal must hold, messages it must not:
# the placeholders of Synapse's own secrets are generated now, never refused).
REAL_REFUSALS: dict[str, tuple[str | None, list[str], list[str]]] = {
    # Its homeserver.yaml is an envsubst template: ${MACAROON_SECRET_KEY},
    # ${REGISTRATION_SHARED_SECRET} and ${POSTGRES_PASSWORD} get generated values; the TURN
    # secret is shared with coturn, log-config.yaml was not published with the stack, and
    # nginx would die on synapse-admin's name.
    "vhonchar--matrix-homeline": (
        "matrix-homeline.chilllab.dev",
        ["nginx/conf.d/matrix.conf:49:0: EM015",
         "synapse/homeserver.yaml:76:1: turn_shared_secret is '${TURN_SHARED_SECRET}'",
         "docker-compose.yml:60:1: `synapse` mounts ./synapse/log-config.yaml, which is not "
         "in your stack"],
        ["macaroon_secret_key", "registration_shared_secret", "database.args.password",
         "POSTGRES_PASSWORD"]),
    # changeme_* for Synapse's four secrets and an empty POSTGRES_PASSWORD in .env: all
    # generated. The Keycloak client secret is the identity provider's: refused.
    "yguenneugues--matrix-docker": (
        "example.com",
        ["synapse/homeserver.yaml:78:0: EM010 oidc_providers.0.client_secret is a "
         "placeholder", "must match another service or party",
         "docker-compose.yml:38:1: `synapse` mounts ./synapse/log.config, which is not in "
         "your stack"],
        ["EM010 registration_shared_secret", "EM010 macaroon_secret_key", "EM010 form_secret",
         "EM010 database.args.password", "EM010 POSTGRES_PASSWORD"]),
    # STRONGPASSWORD on both sides of the database password: generated (one value for both).
    "aaron791109--matrix-element-jitsi": (
        "matix.org", ["docker-compose.yml:25:0: EM023", "nginx/nginx.conf:5:0: EM020"],
        ["EM010 database.args.password", "EM010 POSTGRES_PASSWORD"]),
    "NuggetReckt--Matrix-AIO": (
        "matrix.local", ["no postgres service found",
                         "synapse/homeserver.yaml:62:0: EM010 oidc_providers.0.client_secret"],
        ["EM010 registration_shared_secret"]),
    "iam-rizz--Selfhost-Matrix": (None, ["traefik/traefik.yml:19:0: EM019"], []),
    "AymanAlSuleihi--matrix-docker-config": (None, ["no homeserver.yaml found"], []),
}


@pytest.mark.parametrize("stack", sorted(REAL_REFUSALS))
def test_real_world_stacks_are_refused_located(corpus: Path, stack: str,  # noqa: F811
                                               ctx: StandaloneContext) -> None:
    server, expected, absent = REAL_REFUSALS[stack]
    src = corpus / stack
    before = _snapshot(src)
    with pytest.raises(InputError) as e:
        Adapt().apply(ctx, AdaptInputs(source=str(src), server_name=server or "x.example",
                                       public_address="203.0.113.9"))
    msg = str(e.value)
    for want in expected:
        assert want in msg, (want, msg)
    for not_want in absent:
        assert not_want not in msg, (not_want, msg)
    if server:
        assert "server_name is" not in msg  # the operator's --set server_name is taken
    for err in e.value.errors:
        assert err.path.startswith(str(src)), err
    assert not (ctx.deployment_dir / "stack").exists() and ctx.secrets == {}
    assert _snapshot(src) == before


def test_service_names_the_deploy_phase_does_not_know_are_refused(
        operator_stack: Path, ctx: StandaloneContext) -> None:
    compose = operator_stack / "docker-compose.yml"
    text = compose.read_text()
    compose.write_text(text.replace("\n  synapse:\n", "\n  matrix:\n"))
    line = text.splitlines().index("  synapse:") + 1
    with pytest.raises(InputError) as e:
        Adapt().apply(ctx, _inputs(operator_stack))
    msg = str(e.value)
    assert (f"{compose}:{line}:1: the synapse service is named `matrix`; the deploy phase "
            "starts and checks `synapse`") in msg, msg
    assert not (ctx.deployment_dir / "stack").exists()


def test_the_secrets_found_are_the_bundled_stacks_names() -> None:
    from elematrix_tui.stack.values import SECRET_NAMES

    assert set(SECRETS) == set(SECRET_NAMES) == Adapt.stored_secrets


def test_plan_shows_the_diff_and_writes_nothing(elematrix: str, state_dir: Path,
                                                operator_stack: Path) -> None:
    import json

    args = [elematrix, "plan", str(RUNBOOK), "--deployment", "planned", "--json",
            "--set", f"stack_source={operator_stack}", "--set", f"server_name={SERVER}",
            "--set", "public_address=203.0.113.9"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert r.returncode == 0, r.stdout + r.stderr
    step = next(s for p in json.loads(r.stdout)["phases"] for s in p["steps"]
                if s["id"] == "adapt")
    assert step["state"] == "create" and step["symbol"] == "+", step  # no copy yet
    assert "-    listen 443 ssl http2;" in step["changes"]
    for s in SECRETS.values():
        assert s not in r.stdout + r.stderr
    assert not (state_dir / "deployments" / "planned").exists()


def test_files_it_does_not_edit_are_copied_byte_for_byte(operator_stack: Path,
                                                         ctx: StandaloneContext) -> None:
    logo = bytes(range(256)) * 4  # not UTF-8: a logo the Element container serves
    (operator_stack / "logo.png").write_bytes(logo)
    (operator_stack / "postgres-data").mkdir()  # a running stack's database: never copied
    (operator_stack / "postgres-data" / "PG_VERSION").write_text("15\n")
    Adapt().apply(ctx, _inputs(operator_stack))
    out = ctx.deployment_dir / "stack"
    assert (out / "logo.png").read_bytes() == logo
    assert not (out / "postgres-data").exists()
    assert Adapt().check(ctx, _inputs(operator_stack)).in_sync is True


@pytest.mark.parametrize("what", ["empty", "file"])
def test_no_stack_there_is_refused(tmp_path: Path, ctx: StandaloneContext, what: str) -> None:
    src = tmp_path / "nothing"
    if what == "empty":
        src.mkdir()
    else:
        src.write_text("x")
    with pytest.raises(InputError, match="stack_source"):
        Adapt().check(ctx, _inputs(src))


def test_a_tls_built_bundled_stack_adapts_back_to_the_bundled_rendering(
        tmp_path: Path) -> None:
    """The rehearsal's operator stack (tests/stack/tls_stack.py): the bundled rendering
    served over TLS. Adapted, it is the bundled rendering again, up to one blank line
    where the redirect-only server was. The well-known file under nginx/well-known/ (no
    dot) was left on https before fix.py looked under any `matrix/` directory."""
    from elematrix_tui.actions.stack_adapt import adapt
    from elematrix_tui.stack.render import OPS_FILES, render_files
    from tests.stack.tls_stack import write_tls_stack

    values = {"server_name": "rehearsal.test", "public_address": "127.0.0.5",
              "deployment": "byo", "backup_bucket": "elematrix-byo-123456789012"}
    src = tmp_path / "op"
    found = write_tls_stack(src, values)
    ad = adapt(AdaptInputs(source=str(src), server_name="rehearsal.test",
                           public_address="127.0.0.5", deployment="byo",
                           backup_bucket="elematrix-byo-123456789012"))
    assert ad.secrets == found
    bundled = render_files(values, found)
    # The stack has no backup.sh, restore.sh or systemd/ of its own: they are rendered from
    # its layout, by the same templates, and so byte for byte the bundled ones.
    assert not set(OPS_FILES) & set(ad.original)
    assert set(ad.files) == set(bundled)
    differ = {k for k in bundled if ad.files[k] != bundled[k]}
    assert differ == {"nginx/default.conf"}
    assert ad.files["nginx/default.conf"].replace("\n\nserver {", "\nserver {") == \
        bundled["nginx/default.conf"]
