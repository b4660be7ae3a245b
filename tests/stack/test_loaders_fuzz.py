"""Fuzzing the doctor's loaders: no input makes a traceback.

Every reader the doctor has (compose YAML, nginx tokenizer/parser, homeserver.yaml,
Element JSON, .env, Caddyfile, Traefik labels and static config, compose interpolation)
gets arbitrary text and arbitrarily shaped (but valid) YAML/JSON, and the whole
``diagnose`` runs over it. The only exceptions allowed are the doctor's own located
ones (NginxSyntaxError, CaddySyntaxError from the parsers; DoctorInputError from
``diagnose``), which the command line turns into exit 2 or an EM000 finding.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from elematrix_tui.stack import interp, nginxconf, proxies
from elematrix_tui.stack.doctor import DoctorInputError, diagnose

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Text biased towards the characters the grammars care about.
_GRAMMAR = st.sampled_from([
    *"{};#'\"\\$:=-_/.* \n\t", "server", "location", "listen 443 ssl",
    "proxy_pass http://synapse:8008", "include", "upstream", "${", "}", "${A:-", "${B:?",
    "$$", "__X__", "http://", "reverse_proxy", "handle /_synapse/admin*", "respond 404",
    "services:", "image: nginx", "\r\n",
])
TEXT = st.one_of(st.text(max_size=400),
                 st.lists(st.one_of(_GRAMMAR, st.text(max_size=5)), max_size=80).map("".join))

SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-10, 70000),
                   st.text(max_size=30), st.sampled_from([
                       "${POSTGRES_PASSWORD}", "changeme", "<secret>", "__X__", "8008:8008",
                       "127.0.0.1:5432:5432", "./nginx:/etc/nginx", "./x.conf:/etc/nginx/nginx.conf",
                       "traefik.http.routers.a.rule=Host(`x`)", "matrixdotorg/synapse:v1",
                       "postgres:16", "nginx:1", "vectorim/element-web:1", "traefik:v3",
                       "caddy:2", "service_healthy", "/data/homeserver.yaml", "psycopg2"]))
KEYS = st.one_of(st.text(max_size=12), st.sampled_from([
    "services", "image", "environment", "volumes", "ports", "depends_on", "links", "labels",
    "networks", "command", "env_file", "condition", "healthcheck", "container_name",
    "server_name", "public_baseurl", "listeners", "database", "args", "password", "user",
    "host", "name", "oidc_providers", "client_secret", "redis", "signing_key_path",
    "media_store_path", "max_upload_size", "default_server_config", "m.homeserver",
    "base_url", "entryPoints", "http", "tls", "redirections", "entryPoint", "scheme",
    "external", "ipam", "config", "subnet", "aliases", "x_forwarded", "type", "port"]))
TREE: st.SearchStrategy[Any] = st.recursive(
    SCALAR, lambda kids: st.one_of(st.lists(kids, max_size=5),
                                   st.dictionaries(KEYS, kids, max_size=6)), max_leaves=40)


def _diagnose_files(files: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory(prefix="doctor-real-fuzz-") as d:
        root = Path(d)
        for rel, text in files.items():
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text, encoding="utf-8", errors="surrogatepass")
        for target in ("http", "tls"):
            try:
                res = diagnose(root, target=target)
            except DoctorInputError:
                continue
            json.dumps([f.to_dict() for f in res])
            json.dumps(res.coverage)


@FUZZ
@given(TEXT)
def test_nginx_parser_only_raises_located_errors(text: str) -> None:
    try:
        root = nginxconf.parse(text, Path("x.conf"))
    except nginxconf.NginxSyntaxError as e:
        assert e.line >= 1
        return
    for srv in nginxconf.servers(root):
        nginxconf.location_match(srv, "/_synapse/admin/v1/users/@probe:x")
        nginxconf.listen_ports(srv)


@FUZZ
@given(TEXT)
def test_caddyfile_parser_only_raises_located_errors(text: str) -> None:
    try:
        sites = proxies.parse_caddyfile(text)
    except proxies.CaddySyntaxError as e:
        assert e.line >= 1
        return
    for site in sites:
        proxies.caddy_route(site, "/_synapse/admin/v1/x")
        proxies.caddy_auto_https(site)


@FUZZ
@given(TEXT, st.dictionaries(st.text(max_size=5), st.text(max_size=10), max_size=4))
def test_interpolation_and_dotenv_never_raise(text: str, env: dict[str, str]) -> None:
    r = interp.interpolate(text, env)
    assert r.value is None or isinstance(r.value, str)
    interp.parse_dotenv(text)
    proxies.rule_paths(text)


@FUZZ
@given(TEXT, TEXT, TEXT, TEXT, TEXT)
def test_diagnose_survives_arbitrary_text(compose: str, nginx: str, hs: str, element: str,
                                          extra: str) -> None:
    _diagnose_files({"docker-compose.yml": compose, "nginx/nginx.conf": nginx,
                     "synapse/homeserver.yaml": "server_name: x\n" + hs,
                     "element/config.json": element, ".env": extra, "Caddyfile": extra,
                     "traefik/traefik.yml": "entryPoints:\n" + extra})


@FUZZ
@given(TREE, TREE, TREE, TREE)
def test_diagnose_survives_any_yaml_and_json_shape(services: Any, hs: Any, element: Any,
                                                   traefik: Any) -> None:
    compose = {"services": services if isinstance(services, dict) else {"s": services},
               "networks": {"n": hs}, "volumes": {"v": element}}
    homeserver = {"server_name": "x", "listeners": hs, "database": traefik}
    _diagnose_files({
        "docker-compose.yml": yaml.safe_dump(compose),
        "synapse/homeserver.yaml": yaml.safe_dump(homeserver),
        "element/config.json": json.dumps({"default_server_config": element}),
        "traefik/traefik.yml": yaml.safe_dump({"entryPoints": traefik, "providers": {}}),
        "nginx/conf.d/a.conf": "server { listen 80; location / { proxy_pass http://synapse:8008; } }",
    })


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["synapse", "nginx", "db", "element", "traefik", "x"]),
                       st.fixed_dictionaries({}, optional={
                           "image": SCALAR, "environment": TREE, "volumes": TREE,
                           "ports": TREE, "depends_on": TREE, "links": TREE, "labels": TREE,
                           "networks": TREE, "command": TREE, "env_file": TREE}),
                       max_size=5))
def test_diagnose_survives_compose_services_of_any_shape(services: dict[str, Any]) -> None:
    _diagnose_files({"docker-compose.yml": yaml.safe_dump({"services": services}),
                     "nginx/nginx.conf": "events {}\nhttp { include conf.d/*.conf; }\n",
                     "nginx/conf.d/m.conf": "upstream u { server synapse:8008; }\n"
                                            "server { location / { proxy_pass http://u; } }\n",
                     ".env": "POSTGRES_PASSWORD=changeme\nA=${B:-c}\n"})
