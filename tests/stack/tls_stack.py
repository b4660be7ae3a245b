"""An operator's TLS-built stack for the rehearsal, made the way the research's was built.

The bundled rendering for the rehearsal's deployment (it runs on the engine's images: no
registry answers here), then served over TLS as an operator would: nginx's server on 443
with certificates and HSTS, a port-80 server that only redirects (and answers ACME), a
certbot service and its mounts, port 443 published, and https base URLs in Synapse,
Element and the well-known file. ``stack.adapt`` must take every one of these back out.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from elematrix_tui.stack.render import render_files

REDIRECT = """server {
    listen 80;
    listen [::]:80;
    server_name _;

    location /.well-known/acme-challenge/ {
        root /var/www/certbot;
    }

    location / {
        return 301 https://$host$request_uri;
    }
}

"""
CERTBOT = """
  certbot:
    image: certbot/certbot:v2.11.0
    volumes:
      - ./certbot/conf:/etc/letsencrypt
      - ./certbot/www:/var/www/certbot
    entrypoint: "/bin/sh -c 'trap exit TERM; while :; do certbot renew; sleep 12h & wait $${!}; done;'"
"""


def _sub(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def write_tls_stack(dest: Path, values: dict[str, object],
                    config_dir: str = "synapse") -> dict[str, str]:
    """Write the TLS-built stack into dest; returns its secrets (by SECRET_NAMES).

    An operator's stack has none of the product's operational files (backup.sh,
    restore.sh, systemd/): stack.adapt renders them from the stack's layout. With
    ``config_dir``, Synapse's config lives in another directory than the bundled
    ``synapse/`` (what Synapse mounts gets uid 991, not a hard-wired path)."""
    from elematrix_tui.stack.render import OPS_FILES
    from elematrix_tui.stack.values import SECRET_NAMES

    found = {n: secrets.token_hex(20) for n in SECRET_NAMES}
    files = render_files(values, found)
    for rel in OPS_FILES:
        del files[rel]
    if config_dir != "synapse":
        files = {(config_dir + rel[len("synapse"):] if rel.startswith("synapse/") else rel): t
                 for rel, t in files.items()}
        files["docker-compose.yml"] = _sub(files["docker-compose.yml"], "./synapse:/config:ro",
                                           f"./{config_dir}:/config:ro")
    base = f"http://{values['public_address']}"
    https = f"https://{values['public_address']}"
    nginx = files["nginx/default.conf"]
    nginx = _sub(nginx, "    listen 80 default_server;\n    listen [::]:80 default_server;\n",
                 "    listen 443 ssl default_server;\n    listen [::]:443 ssl default_server;\n"
                 "    ssl_certificate /etc/letsencrypt/live/chat/fullchain.pem;\n"
                 "    ssl_certificate_key /etc/letsencrypt/live/chat/privkey.pem;\n"
                 '    add_header Strict-Transport-Security "max-age=63072000" always;\n')
    nginx = _sub(nginx, "server {", REDIRECT + "server {")
    files["nginx/default.conf"] = nginx
    compose = files["docker-compose.yml"]
    compose = _sub(compose, ':80"\n    volumes:\n',
                   ':80"\n      - "443:443"\n    volumes:\n'
                   "      - ./certbot/conf:/etc/letsencrypt:ro\n"
                   "      - ./certbot/www:/var/www/certbot:ro\n")
    compose = _sub(compose, "\nvolumes:\n", CERTBOT + "\nvolumes:\n")
    files["docker-compose.yml"] = compose
    for rel in (f"{config_dir}/homeserver.yaml", "element/config.json",
                "nginx/well-known/matrix/client"):
        files[rel] = _sub(files[rel], base, https)
    for rel, text in files.items():
        p = dest / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    return found
