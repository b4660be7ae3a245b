"""Regenerate tests/data/stacks/em*: one broken stack per doctor rule.

Each case is the hand-written correct stack ``good-http`` with one targeted edit. The
expected findings (rule, file, line) are located by searching the edited text for a
marker, independently of the doctor, and written to ``EXPECTED`` in the case directory.
Run: ``.venv/bin/python tests/stack/make_corpus.py`` (the output is committed).
"""

from __future__ import annotations

import shutil
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data" / "stacks"
BASE = DATA / "good-http"

NGINX = "nginx/conf.d/element.conf"
COMPOSE = "docker-compose.yml"
HS = "synapse/homeserver.yaml"
CADDY = "caddy/Caddyfile"
_NGINX_SERVICE = (
    "  nginx:\n    image: nginx:1.27-alpine\n    ports:\n      - \"80:80\"\n    volumes:\n"
    "      - ./nginx/conf.d:/etc/nginx/conf.d:ro\n")
_TRAEFIK_SERVICE = (
    "  traefik:\n    image: traefik:v3.1\n    command:\n      - --providers.docker=true\n"
    "      - --entrypoints.web.address=:80\n    ports:\n      - \"80:80\"\n    volumes:\n"
    "      - /var/run/docker.sock:/var/run/docker.sock:ro\n")
_SYNAPSE_LABELS = (
    "    labels:\n      - traefik.enable=true\n"
    "      - traefik.http.routers.synapse.rule={rule}\n"
    "      - traefik.http.routers.synapse.entrypoints=web\n{extra}"
    "      - traefik.http.services.synapse.loadbalancer.server.port=8008\n"
    "    depends_on:\n      db:\n")
_CADDY_SERVICE = (
    "  caddy:\n    image: caddy:2.8.4\n    ports:\n      - \"80:80\"\n    volumes:\n"
    "      - ./caddy/Caddyfile:/etc/caddy/Caddyfile:ro\n")
_CADDYFILE = """http://chat.acme-corp.example {
\trequest_body {
\t\tmax_size 100MB
\t}
\treverse_proxy /_matrix/* synapse:8008
\treverse_proxy /_synapse/* synapse:8008
\treverse_proxy element:80
}
"""
ELEMENT = "element/config.json"

# case: (edits [(file, old, new)], expected [(rule, file, marker)])
CASES: dict[str, tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]] = {
    "em000-nginx-syntax": (
        [(NGINX, "proxy_pass http://element;", "proxy_pass http://element")],
        [("EM000", NGINX, "proxy_pass http://element")]),
    "em001-redirect": (
        [(NGINX, "    server_name _;\n",
          "    server_name _;\n    return 301 https://$host$request_uri;\n")],
        [("EM001", NGINX, "return 301")]),
    "em002-tls-directives": (
        [(NGINX, "    server_name _;\n",
          "    server_name _;\n    ssl_certificate /etc/letsencrypt/live/x/fullchain.pem;\n"
          "    include /etc/letsencrypt/options-ssl-nginx.conf;\n")],
        [("EM002", NGINX, "ssl_certificate"), ("EM002", NGINX, "options-ssl-nginx")]),
    "em002-tls-server": (
        [(NGINX, "upstream synapse_backend {",
          "server {\n    listen 443 ssl;\n    server_name chat.acme-corp.example;\n"
          "    location / {\n        proxy_pass http://element;\n    }\n}\n\n"
          "upstream synapse_backend {")],
        [("EM002", NGINX, "listen 443 ssl")]),
    "em003-certbot": (
        [(COMPOSE, "volumes:\n  pgdata:",
          "  certbot:\n    image: certbot/certbot:v2.11.0\n    volumes:\n"
          "      - ./certbot/conf:/etc/letsencrypt\n\nvolumes:\n  pgdata:"),
         (COMPOSE, "      - ./nginx/conf.d:/etc/nginx/conf.d:ro\n",
          "      - ./nginx/conf.d:/etc/nginx/conf.d:ro\n"
          "      - ./certbot/conf:/etc/letsencrypt:ro\n")],
        [("EM003", COMPOSE, "  certbot:"), ("EM003", COMPOSE, "/etc/letsencrypt:ro")]),
    "em004-hsts": (
        [(NGINX, "    client_max_body_size 100M;\n",
          "    client_max_body_size 100M;\n"
          '    add_header Strict-Transport-Security "max-age=63072000" always;\n')],
        [("EM004", NGINX, "Strict-Transport-Security")]),
    "em005-proxy-pass-path": (
        [(NGINX, "proxy_pass http://synapse_backend;", "proxy_pass http://synapse_backend/;")],
        [("EM005", NGINX, "proxy_pass http://synapse_backend/;")]),
    "em006-initdb-missing": (
        [(COMPOSE, '      POSTGRES_INITDB_ARGS: "--encoding=UTF8 --locale=C"\n', "")],
        [("EM006", COMPOSE, "    environment:\n      POSTGRES_USER")]),
    "em006-initdb-c-utf8": (
        [(COMPOSE, '"--encoding=UTF8 --locale=C"', '"--encoding=UTF8 --locale=C.UTF-8"')],
        [("EM006", COMPOSE, "POSTGRES_INITDB_ARGS")]),
    "em007-registration": (
        [(HS, "enable_registration: true", "enable_registration: false")],
        [("EM007", HS, "enable_registration")]),
    "em008-base-url-mismatch": (
        [(ELEMENT, '"base_url": "http://54.12.34.56"', '"base_url": "http://54.12.34.57:8080"')],
        [("EM008", ELEMENT, '"base_url"')]),
    "em008-https-baseurl": (
        [(HS, 'public_baseurl: "http://54.12.34.56/"', 'public_baseurl: "https://54.12.34.56/"')],
        [("EM008", HS, "public_baseurl")]),
    "em008-no-public-baseurl": (
        [(HS, 'public_baseurl: "http://54.12.34.56/"\n', "")],
        [("EM008", HS, "server_name:")]),
    "em009-ec2-server-name": (
        [(HS, 'server_name: "matrix.acme-corp.example"',
          'server_name: "ec2-54-12-34-56.compute-1.amazonaws.com"')],
        [("EM009", HS, "server_name:")]),
    "em010-placeholder-secret": (
        [(HS, 'macaroon_secret_key: "pL9xK3mW7qR2vT6yB1nZ5cH8jD4fS0gA"',
          'macaroon_secret_key: "CHANGE_ME"')],
        [("EM010", HS, "macaroon_secret_key")]),
    "em010-default-db-password": (
        [(HS, "    password: 7hK2pQ9sVx4mN8rT3wYz6bC1", "    password: synapse"),
         (COMPOSE, "POSTGRES_PASSWORD: 7hK2pQ9sVx4mN8rT3wYz6bC1", "POSTGRES_PASSWORD: synapse")],
        [("EM010", HS, "password: synapse"), ("EM010", COMPOSE, "POSTGRES_PASSWORD")]),
    "em011-signing-key": (
        [(HS, 'signing_key_path: "/data/matrix.acme-corp.example.signing.key"',
          'signing_key_path: "/keys/matrix.acme-corp.example.signing.key"')],
        [("EM011", HS, "signing_key_path")]),
    "em012-published-ports": (
        [(COMPOSE, "    restart: always\n    environment:\n      POSTGRES_USER",
          '    restart: always\n    ports:\n      - "5432:5432"\n    environment:\n'
          "      POSTGRES_USER"),
         (COMPOSE, "  synapse:\n    image: matrixdotorg/synapse:v1.163.2\n",
          "  synapse:\n    image: matrixdotorg/synapse:v1.163.2\n    ports:\n"
          "      - target: 8008\n        published: 8008\n")],
        [("EM012", COMPOSE, '"5432:5432"'), ("EM012", COMPOSE, "target: 8008")]),
    "em013-admin-exposed": (
        [(NGINX, "    location / {\n",
          "    location /_synapse {\n        proxy_pass http://synapse_backend;\n    }\n\n"
          "    location / {\n")],
        [("EM013", NGINX, "location /_synapse {")]),
    "em014-body-size-missing": (
        [(NGINX, "    client_max_body_size 100M;\n", "")],
        [("EM014", NGINX, "location ~ ^(/_matrix")]),
    "em014-body-size-low": (
        [(NGINX, "client_max_body_size 100M;", "client_max_body_size 10m;")],
        [("EM014", NGINX, "client_max_body_size 10m")]),
    # Synapse exits when PostgreSQL is not ready at start: a list form waits for the
    # container only. (nginx with `depends_on: [synapse, element]` is fine: the names
    # resolve once the containers are started.)
    "em015-depends-on": (
        [(COMPOSE, "    depends_on:\n      db:\n        condition: service_healthy\n",
          "    depends_on:\n      - db\n")],
        [("EM015", COMPOSE, "      - db")]),
    # nginx with no depends_on at all: its static upstream names may not resolve yet.
    "em015-nginx-no-depends": (
        [(COMPOSE, "    depends_on:\n      synapse:\n        condition: service_healthy\n"
                   "      element:\n        condition: service_healthy\n", "")],
        [("EM015", NGINX, "server synapse:8008"), ("EM015", NGINX, "proxy_pass http://element")]),
    "em019-tls-intent": (
        [(NGINX, "upstream synapse_backend {",
          "server {\n    listen 443 ssl;\n    server_name chat.acme-corp.example;\n"
          "    ssl_certificate /etc/ssl/chat/fullchain.pem;\n"
          "    ssl_certificate_key /etc/ssl/chat/privkey.pem;\n"
          "    location / {\n        proxy_pass http://element;\n    }\n}\n\n"
          "upstream synapse_backend {")],
        [("EM019", NGINX, "listen 443 ssl")]),
    "em020-nginx-context": (
        [(NGINX, "upstream synapse_backend {", "set $brand acme;\n\nupstream synapse_backend {")],
        [("EM020", NGINX, "set $brand")]),
    "em021-upstream-unknown": (
        [(NGINX, "    location / {\n",
          "    location /portfolio {\n        proxy_pass http://portfolio:80;\n    }\n\n"
          "    location / {\n")],
        [("EM021", NGINX, "proxy_pass http://portfolio")]),
    "em022-loopback-upstream": (
        [(NGINX, "    location / {\n",
          "    location /admin-ui {\n        proxy_pass http://127.0.0.1:8080;\n    }\n\n"
          "    location / {\n")],
        [("EM022", NGINX, "proxy_pass http://127.0.0.1")]),
    "em023-undefined-network": (
        [(COMPOSE, "      - ./element/config.json:/app/config.json:ro\n",
          "      - ./element/config.json:/app/config.json:ro\n    networks:\n      - frontend\n")],
        [("EM023", COMPOSE, "      - frontend")]),
    "em024-external-network": (
        [(COMPOSE, "      - ./nginx/conf.d:/etc/nginx/conf.d:ro\n",
          "      - ./nginx/conf.d:/etc/nginx/conf.d:ro\n    networks:\n      - default\n"
          "      - shared\n"),
         (COMPOSE, "volumes:\n  pgdata:\n", "networks:\n  shared:\n    external: true\n\n"
          "volumes:\n  pgdata:\n")],
        [("EM024", COMPOSE, "    external: true")]),
    # Traefik: a router with a Host rule only takes every path, the admin API included.
    "em013-traefik-admin": (
        [(COMPOSE, _NGINX_SERVICE, _TRAEFIK_SERVICE),
         (COMPOSE, "    depends_on:\n      db:\n", _SYNAPSE_LABELS.format(
             rule="Host(`chat.acme-corp.example`)", extra=""))],
        [("EM013", COMPOSE, "routers.synapse.rule")]),
    # Traefik redirecting to https on a stack meant for HTTP.
    "em001-traefik-redirect": (
        [(COMPOSE, _NGINX_SERVICE, _TRAEFIK_SERVICE),
         (COMPOSE, "    depends_on:\n      db:\n", _SYNAPSE_LABELS.format(
             rule="Host(`chat.acme-corp.example`) && PathPrefix(`/_matrix`)",
             extra="      - traefik.http.routers.synapse.middlewares=to-https\n"
                   "      - traefik.http.middlewares.to-https.redirectscheme.scheme=https\n"))],
        [("EM001", COMPOSE, "to-https.redirectscheme")]),
    # Caddy: `/_synapse/*` reaches the admin API.
    "em013-caddy-admin": (
        [(COMPOSE, _NGINX_SERVICE, _CADDY_SERVICE), (CADDY, "", _CADDYFILE)],
        [("EM013", CADDY, "reverse_proxy /_synapse/*")]),
    "em016-media": (
        [(HS, "media_store_path: /data/media_store", "media_store_path: /media")],
        [("EM016", HS, "media_store_path")]),
    "em017-db-password-mismatch": (
        [(HS, "    password: 7hK2pQ9sVx4mN8rT3wYz6bC1", "    password: 9Wq4Zt7Lm2Xv5Nb8Rk3Jp6Hd")],
        [("EM017", HS, "password: 9Wq4")]),
    "em018-x-forwarded": (
        [(HS, "    x_forwarded: true\n", "")],
        [("EM018", HS, "  - port: 8008")]),
    "em005-proxy-pass-path-in-variable": (
        [(NGINX, "    client_max_body_size 100M;\n",
          "    client_max_body_size 100M;\n    resolver 127.0.0.11 valid=10s;\n"),
         (NGINX, "        proxy_pass http://synapse_backend;\n",
          "        set $synapse http://synapse:8008/;\n        proxy_pass $synapse;\n")],
        [("EM005", NGINX, "proxy_pass $synapse;")]),
    "em025-no-resolver": (
        [(NGINX, "        proxy_pass http://synapse_backend;\n",
          "        set $synapse http://synapse:8008;\n        proxy_pass $synapse;\n")],
        [("EM025", NGINX, "proxy_pass $synapse;")]),
}


def _line_of(text: str, marker: str) -> int:
    idx = text.index(marker)
    return text.count("\n", 0, idx) + 1 + marker[: len(marker) - len(marker.lstrip("\n"))].count(
        "\n")


def main() -> None:
    for case, (edits, expected) in CASES.items():
        dest = DATA / case
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(BASE, dest)
        for file, old, new in edits:
            p = dest / file
            if old == "" and not p.exists():  # a new file of the case
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(new)
                continue
            text = p.read_text()
            if old not in text:
                raise SystemExit(f"{case}: {old!r} not in {file}")
            p.write_text(text.replace(old, new, 1))
        lines = []
        for rule, file, marker in expected:
            text = (dest / file).read_text()
            if marker not in text:
                raise SystemExit(f"{case}: marker {marker!r} not in {file}")
            lines.append(f"{rule} {file}:{_line_of(text, marker)}")
        (dest / "EXPECTED").write_text("\n".join(lines) + "\n")
        print(case, *lines)


if __name__ == "__main__":
    main()
