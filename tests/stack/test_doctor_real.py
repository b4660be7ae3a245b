"""The behaviours issue 13 asks of a doctor that is right on real stacks, one by one.

Each test builds a small stack from ``good-http`` (a correct HTTP-only stack) with one
change, so the behaviour under test is the only thing that can make a finding.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from elematrix_tui.stack.doctor import diagnose
from elematrix_tui.stack.interp import interpolate, parse_dotenv
from elematrix_tui.stack.load import _role
from elematrix_tui.stack.rules.secrets import weak_secret

GOOD = Path(__file__).resolve().parent.parent / "data" / "stacks" / "good-http"


def _stack(tmp_path: Path, edits: dict[str, tuple[str, str]] | None = None,
           files: dict[str, str] | None = None) -> Path:
    root = tmp_path / "st"
    shutil.copytree(GOOD, root)
    for rel, (old, new) in (edits or {}).items():
        p = root / rel
        text = p.read_text()
        assert old in text, (rel, old)
        p.write_text(text.replace(old, new, 1))
    for rel, text in (files or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def _got(root: Path, target: str = "http") -> set[tuple[str, str, int]]:
    return {(f.rule, f.file, f.line) for f in diagnose(root, target=target)}


# ---------------------------------------------------------------- interpolation


@pytest.mark.parametrize(("text", "env", "value", "deploy"), [
    ("${A}", {"A": "x"}, "x", []),
    ("${A}", {}, None, ["A"]),
    ("$A/b", {"A": "x"}, "x/b", []),
    ("${A:-d}", {"A": ""}, "d", []),
    ("${A-d}", {"A": ""}, "", []),
    ("${A-d}", {}, "d", []),
    ("${A:-${B}}", {"B": "b"}, "b", []),
    ("${A:?A is required}", {}, None, ["A"]),
    ("${A?msg}", {"A": "v"}, "v", []),
    ("${A:+set}", {"A": "1"}, "set", []),
    ("${A:+set}", {}, "", []),
    ("$$A and $${B}", {}, "$A and ${B}", []),
    ("pre-${A}-post", {"A": "x"}, "pre-x-post", []),
])
def test_every_compose_interpolation_form(text: str, env: dict[str, str], value: str | None,
                                          deploy: list[str]) -> None:
    r = interpolate(text, env)
    assert (r.value, r.deploy_time) == (value, deploy)


def test_dotenv_rules() -> None:
    env = parse_dotenv("A=1\nexport B='lit ${A}'\nC=\"q ${A}\"\nD=x   # comment\n#E=no\nF=${A}2\n")
    assert {k: e.value for k, e in env.items()} == {
        "A": "1", "B": "lit ${A}", "C": "q 1", "D": "x", "F": "12"}
    assert env["F"].line == 6


def _secret_stack(tmp_path: Path, value: str, dotenv: str | None) -> Path:
    files = {".env": dotenv} if dotenv is not None else {}
    return _stack(tmp_path, {"docker-compose.yml": (
        "POSTGRES_PASSWORD: 7hK2pQ9sVx4mN8rT3wYz6bC1", f"POSTGRES_PASSWORD: {value}")},
        files)


@pytest.mark.parametrize(("value", "dotenv", "expect"), [
    ("${PG}", None, set()),                              # deploy time: not checked
    ('"${PG:?set PG}"', None, set()),                    # required at deploy time
    ("${PG}", "PG=changeme\n", {("EM010", ".env", 1)}),  # placeholder in .env, located there
    ("${PG}", "PG=7hK2pQ9sVx4mN8rT3wYz6bC1\n", set()),
    ("${PG:-changeme}", None, {("EM010", "docker-compose.yml", 8)}),  # the default is used
    ("${PG}", "PG=\n", {("EM010", ".env", 1)}),          # empty, and compose passes it
])
def test_secrets_resolve_through_dotenv(tmp_path: Path, value: str, dotenv: str | None,
                                        expect: set[tuple[str, str, int]]) -> None:
    got = {g for g in _got(_secret_stack(tmp_path, value, dotenv)) if g[0] == "EM010"}
    assert got == expect


def test_pass_through_variable_takes_dotenv(tmp_path: Path) -> None:
    root = _stack(tmp_path, {"docker-compose.yml": (
        "      POSTGRES_PASSWORD: 7hK2pQ9sVx4mN8rT3wYz6bC1\n", "")}, {".env": "X=1\n"})
    text = (root / "docker-compose.yml").read_text().replace(
        "      POSTGRES_USER: synapse\n", "      POSTGRES_USER: synapse\n      POSTGRES_PASSWORD:\n")
    (root / "docker-compose.yml").write_text(text)
    assert not {g for g in _got(root) if g[0] == "EM010"}  # from the shell: not checked
    (root / ".env").write_text("POSTGRES_PASSWORD=REPLACE_ME\n")
    assert {g for g in _got(root) if g[0] == "EM010"} == {("EM010", ".env", 1)}


@pytest.mark.parametrize("value", ["changeme", "CHANGE_ME_NOW", "<registration_shared_secret>",
                                   "__SYNAPSE_FORM_SECRET__", "REPLACE_ME", "{{ secret }}",
                                   "your_postgres_password_here", "STRONGPASSWORD", "secret",
                                   "xxxxxxxx"])
def test_placeholders_by_shape_and_wording(value: str) -> None:
    assert weak_secret(value) == "a placeholder"


def test_references_are_not_placeholders() -> None:
    assert weak_secret("${MACAROON_SECRET_KEY}") is None
    assert weak_secret("7hK2pQ9sVx4mN8rT3wYz6bC1") is None


# ---------------------------------------------------------------- what a service is


@pytest.mark.parametrize(("name", "data", "role"), [
    ("synapse-admin", {"image": "awesometechnologies/synapse-admin:0.11"}, "other"),
    ("matrix", {"image": "ghcr.io/element-hq/synapse:v1.149.1"}, "synapse"),
    ("hs", {"image": "matrixdotorg/synapse:v1", "environment": {"SYNAPSE_WORKER": "x"}},
     "synapse-worker"),
    ("synapse", {"build": "./synapse", "environment": ["SYNAPSE_CONFIG_PATH=/data/h.yaml"]},
     "synapse"),
    ("pg", {"image": "bitnami/postgresql:16"}, "postgres"),
    ("web", {"image": "nginx:alpine"}, "nginx"),
    ("synapse-postgres-backup", {"image": "prodrigestivill/postgres-backup-local"}, "other"),
    ("acme", {"image": "neilpang/acme.sh"}, "certbot"),
])
def test_services_are_what_they_run(name: str, data: dict[str, object], role: str) -> None:
    assert _role(name, data) == role


# ---------------------------------------------------------------- what is loaded


def test_only_the_mounted_homeserver_is_checked(tmp_path: Path) -> None:
    root = _stack(tmp_path, files={"old/homeserver.yaml": (
        "server_name: x\nlisteners: []\nmacaroon_secret_key: changeme\n")})
    assert _got(root) == set()
    cov = diagnose(root).coverage
    skipped = {f["file"]: f["reason"] for f in cov["files"] if f["status"] == "skipped"}
    assert "old/homeserver.yaml" in skipped and "synapse/homeserver.yaml" in skipped[
        "old/homeserver.yaml"]


def test_nginx_files_never_read_are_skipped(tmp_path: Path) -> None:
    root = _stack(tmp_path, files={
        "nginx/unused/tls.conf": "server { listen 443 ssl; ssl_certificate /x.pem; }\n",
        "nginx/conf.d/element.conf.bak": "server { return 301 https://x; }\n"})
    assert _got(root) == set()
    cov = diagnose(root).coverage
    assert {f["file"] for f in cov["files"] if f["status"] == "skipped"} >= {
        "nginx/unused/tls.conf", "nginx/conf.d/element.conf.bak"}


def test_includes_are_followed_into_their_context(tmp_path: Path) -> None:
    """A snippet included inside a server is read there: `set` is fine in it; the same
    snippet included at http level is refused by nginx."""
    root = _stack(tmp_path, {
        "docker-compose.yml": ("      - ./nginx/conf.d:/etc/nginx/conf.d:ro\n",
                               "      - ./nginx/conf.d:/etc/nginx/conf.d:ro\n"
                               "      - ./nginx/snippets:/etc/nginx/snippets:ro\n"),
        "nginx/conf.d/element.conf": ("    server_name _;\n",
                                      "    server_name _;\n    include snippets/vars.conf;\n")},
        {"nginx/snippets/vars.conf": "set $brand acme;\n"})
    assert _got(root) == set()
    text = (root / "nginx/conf.d/element.conf").read_text()
    (root / "nginx/conf.d/element.conf").write_text("include snippets/vars.conf;\n" + text.replace(
        "    include snippets/vars.conf;\n", ""))
    assert _got(root) == {("EM020", "nginx/snippets/vars.conf", 1)}


def test_unrendered_templates_are_skipped_not_placeholders(tmp_path: Path) -> None:
    root = _stack(tmp_path)
    hs = root / "synapse/homeserver.yaml"
    hs.write_text(hs.read_text().replace('server_name: "matrix.acme-corp.example"',
                                         'server_name: "__DOMAIN__"').replace(
        "macaroon_secret_key: \"pL9xK3mW7qR2vT6yB1nZ5cH8jD4fS0gA\"",
        'macaroon_secret_key: "__MACAROON__"'))
    got = diagnose(root)
    assert not [f for f in got if f.rule == "EM010"]
    groups = {g["group"]: g for g in got.coverage["groups"]}
    assert groups["homeserver"]["ran"] is False and "not rendered" in groups[
        "homeserver"]["reason"]


# ---------------------------------------------------------------- start order


def test_nginx_with_resolver_and_variable_upstream_needs_no_depends_on(tmp_path: Path) -> None:
    root = _stack(tmp_path, {
        "docker-compose.yml": ("    depends_on:\n      synapse:\n        condition: "
                               "service_healthy\n      element:\n        condition: "
                               "service_healthy\n", ""),
        "nginx/conf.d/element.conf": ("upstream synapse_backend {\n    server synapse:8008;\n}\n",
                                      "")})
    conf = root / "nginx/conf.d/element.conf"
    conf.write_text(conf.read_text().replace(
        "proxy_pass http://synapse_backend;",
        "resolver 127.0.0.11 valid=10s;\n        set $syn synapse;\n"
        "        proxy_pass http://$syn:8008;").replace(
        "proxy_pass http://element;", "set $el element;\n        proxy_pass http://$el;"))
    assert _got(root) == set()
    # The variable still names Synapse: an admin location through it is found.
    conf.write_text(conf.read_text().replace("    location / {\n", (
        "    location /_synapse {\n        set $hs synapse;\n"
        "        proxy_pass http://$hs;\n    }\n\n    location / {\n"), 1))
    assert {g[0] for g in _got(root)} == {"EM013"}


def test_synapse_without_any_depends_on_postgres(tmp_path: Path) -> None:
    root = _stack(tmp_path, {"docker-compose.yml": (
        "    depends_on:\n      db:\n        condition: service_healthy\n", "")})
    assert _got(root) == {("EM015", "docker-compose.yml", 17)}


# ---------------------------------------------------------------- Traefik and Caddy


def test_traefik_router_restricted_to_client_paths_is_fine(tmp_path: Path) -> None:
    src = Path(__file__).resolve().parent.parent / "data" / "stacks" / "em013-traefik-admin"
    root = tmp_path / "t"
    shutil.copytree(src, root)
    p = root / "docker-compose.yml"
    p.write_text(p.read_text().replace(
        "rule=Host(`chat.acme-corp.example`)",
        "rule=Host(`chat.acme-corp.example`) && (PathPrefix(`/_matrix`) || "
        "PathPrefix(`/_synapse/client`))"))
    assert _got(root) == set()


def test_caddy_site_that_refuses_the_admin_api_is_fine(tmp_path: Path) -> None:
    src = Path(__file__).resolve().parent.parent / "data" / "stacks" / "em013-caddy-admin"
    root = tmp_path / "c"
    shutil.copytree(src, root)
    p = root / "caddy/Caddyfile"
    p.write_text(p.read_text().replace("\treverse_proxy /_synapse/* synapse:8008\n",
                                       "\trespond /_synapse/admin* 404\n"
                                       "\treverse_proxy /_synapse/* synapse:8008\n"))
    assert _got(root) == set()
    # A Caddy site without http:// serves TLS on its own: the stack's intent is TLS.
    p.write_text(p.read_text().replace("http://chat.acme-corp.example", "chat.acme-corp.example"))
    assert _got(root) == {("EM019", "caddy/Caddyfile", 1)}
    assert _got(root, target="tls") == set()


def test_caddy_that_the_stack_does_not_carry_is_said_plainly(tmp_path: Path) -> None:
    src = Path(__file__).resolve().parent.parent / "data" / "stacks" / "em013-caddy-admin"
    root = tmp_path / "c"
    shutil.copytree(src, root)
    (root / "caddy/Caddyfile").unlink()
    groups = {g["group"]: g for g in diagnose(root).coverage["groups"]}
    assert groups["caddy"]["ran"] is False
    assert "were not read" in groups["caddy"]["reason"]


def test_nginx_built_from_a_dockerfile_reads_its_build_context(tmp_path: Path) -> None:
    root = _stack(tmp_path, {"docker-compose.yml": (
        "    image: nginx:1.27-alpine\n", "    build: ./nginx\n")})
    text = (root / "docker-compose.yml").read_text().replace(
        "      - ./nginx/conf.d:/etc/nginx/conf.d:ro\n", "").replace(
        "  nginx:\n    build: ./nginx\n    ports:\n      - \"80:80\"\n    volumes:\n",
        "  nginx:\n    build: ./nginx\n    ports:\n      - \"80:80\"\n")
    (root / "docker-compose.yml").write_text(text)
    conf = root / "nginx/conf.d/element.conf"
    conf.write_text(conf.read_text().replace("    client_max_body_size 100M;\n", ""))
    got = diagnose(root)
    assert {f.rule for f in got} == {"EM014"}
    assert any("copied by its build" in f["reason"] for f in got.coverage["files"])


def test_fix_closes_an_admin_location_in_place(tmp_path: Path) -> None:
    """A stack that proxies `location ^~ /_synapse/admin` (vhonchar's): --fix used to add
    a second identical location, which nginx refuses ('duplicate location')."""
    from elematrix_tui.stack.fix import apply_plan, plan_fix

    from .conftest import nginx_test

    root = _stack(tmp_path, {"nginx/conf.d/element.conf": ("    location / {\n", (
        "    location ^~ /_synapse/admin {\n        proxy_pass http://synapse_backend;\n"
        "    }\n\n    location / {\n"))})
    assert {f.rule for f in diagnose(root)} == {"EM013"}
    apply_plan(plan_fix(root))
    conf = (root / "nginx/conf.d/element.conf").read_text()
    assert conf.count("location ^~ /_synapse/admin") == 1
    assert diagnose(root) == []
    r = nginx_test(conf, tmp_path / "ngx")
    assert r.returncode == 0, r.stderr


def test_cli_target_tls_and_json_coverage(tmp_path: Path) -> None:
    import io
    import json

    from elematrix_tui.stack.doctor import main

    tls = Path(__file__).resolve().parent.parent / "data" / "stacks" / "tls-research"
    for target, advisory in (("http", True), ("tls", False)):
        out = io.StringIO()
        code = main(["--format", "json", "--target", target, str(tls)], stdout=out,
                    stderr=io.StringIO(), stdin=io.StringIO(""))
        doc = json.loads(out.getvalue())
        assert code == 1 and doc["errors"] == 2
        assert any(f["rule"] == "EM019" for f in doc["findings"]) is advisory
        assert doc["coverage"]["intent"] == "tls" and doc["coverage"]["target"] == target
        assert {"file", "kind", "status", "reason"} == set(doc["coverage"]["files"][0])
    err = io.StringIO()
    assert main(["--target", "ftp", str(tls)], stdout=io.StringIO(), stderr=err,
                stdin=io.StringIO("")) == 2


def test_deploy_time_secrets_are_named_not_checked(tmp_path: Path) -> None:
    root = _secret_stack(tmp_path, "${PG_PASSWORD}", None)
    hs = root / "synapse/homeserver.yaml"
    hs.write_text(hs.read_text().replace('"pL9xK3mW7qR2vT6yB1nZ5cH8jD4fS0gA"', '"${MACAROON}"'))
    got = diagnose(root)
    assert not [f for f in got if f.rule == "EM010"]
    assert "secrets supplied at deploy time, not checked: MACAROON, PG_PASSWORD" in got.coverage[
        "notes"]


def test_upstream_named_in_extra_hosts_resolves(tmp_path: Path) -> None:
    root = _stack(tmp_path, {"nginx/conf.d/element.conf": ("    location / {\n", (
        "    location /portfolio {\n        proxy_pass http://portfolio:80;\n    }\n\n"
        "    location / {\n"))})
    assert {f.rule for f in diagnose(root)} == {"EM021"}
    p = root / "docker-compose.yml"
    p.write_text(p.read_text().replace("  nginx:\n", "  nginx:\n    extra_hosts:\n"
                                       "      - \"portfolio:10.0.0.5\"\n"))
    assert diagnose(root) == []


def test_certificate_in_an_included_snippet_is_tls_on_purpose(tmp_path: Path) -> None:
    root = _stack(tmp_path, {
        "docker-compose.yml": ("      - ./nginx/conf.d:/etc/nginx/conf.d:ro\n",
                               "      - ./nginx/conf.d:/etc/nginx/conf.d:ro\n"
                               "      - ./nginx/tls:/etc/nginx/tls:ro\n"),
        "nginx/conf.d/element.conf": ("    listen 80;\n",
                                      "    listen 443 ssl;\n    include tls/site.conf;\n")},
        {"nginx/tls/site.conf": "ssl_certificate /etc/ssl/a.pem;\n"
                                "ssl_certificate_key /etc/ssl/a.key;\n"})
    assert _got(root) == {("EM019", "nginx/conf.d/element.conf", 6)}


def test_traefik_static_flags_are_read(tmp_path: Path) -> None:
    src = Path(__file__).resolve().parent.parent / "data" / "stacks" / "em013-traefik-admin"
    root = tmp_path / "t"
    shutil.copytree(src, root)
    p = root / "docker-compose.yml"
    p.write_text(p.read_text().replace(
        "rule=Host(`chat.acme-corp.example`)",
        "rule=Host(`chat.acme-corp.example`) && PathPrefix(`/_matrix`)").replace(
        "      - --entrypoints.web.address=:80\n",
        "      - --entrypoints.web.address=:80\n"
        "      - --entrypoints.web.http.redirections.entrypoint.scheme=https\n"))
    assert {g[0] for g in _got(root)} == {"EM001"}
    p.write_text(p.read_text().replace(
        "      - --entrypoints.web.http.redirections.entrypoint.scheme=https\n",
        "      - --entrypoints.web.http.redirections.entrypoint.scheme=https\n"
        "      - --entrypoints.websecure.address=:443\n"
        "      - --entrypoints.websecure.http.tls.certresolver=le\n"
        "      - --providers.file.directory=/dynamic\n"))
    got = diagnose(root)
    assert {f.rule for f in got} == {"EM019"}  # TLS on purpose: the redirect belongs to it
    assert any("file provider is not read" in n for n in got.coverage["notes"])
