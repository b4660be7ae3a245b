"""Rules over homeserver.yaml and Element's config.json.

EM007 registration, EM008 base URLs, EM009 server_name, EM010 secrets, EM011/EM016
volumes, EM017 database password, EM018 x_forwarded.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any
from urllib.parse import urlsplit

from ..findings import Finding
from ..model import JsonFile, Stack, YamlFile, service_env
from .secrets import is_reference, weak_secret

_EC2_HOST = re.compile(
    r"^(ec2-\d{1,3}-\d{1,3}-\d{1,3}-\d{1,3}\.([a-z0-9-]+\.)?compute(-1)?\.amazonaws\.com(\.cn)?"
    r"|ip-\d{1,3}-\d{1,3}-\d{1,3}-\d{1,3}\.([a-z0-9-]+\.compute|ec2)\.internal)(:\d+)?$", re.I)
_SYNAPSE_SECRETS = ("registration_shared_secret", "macaroon_secret_key", "form_secret")
# Other secrets a homeserver.yaml carries: (path to the key, applies only with postgres).
_OTHER_SECRETS: tuple[tuple[str, ...], ...] = (
    ("redis", "password"), ("email", "smtp_pass"), ("turn_shared_secret",),
    ("worker_replication_secret",), ("recaptcha_private_key",))


def _secrets(d: dict[str, Any], is_pg: bool) -> list[tuple[tuple[str | int, ...], Any]]:
    """(key path, value) of every secret set in a homeserver config."""
    out: list[tuple[tuple[str | int, ...], Any]] = []
    for key in _SYNAPSE_SECRETS:
        if key in d:
            out.append(((key,), d.get(key)))
    db = d.get("database")
    args = db.get("args") if isinstance(db, dict) else None
    if is_pg and isinstance(args, dict) and "password" in args:
        out.append((("database", "args", "password"), args.get("password")))
    for path in _OTHER_SECRETS:
        node: Any = d
        for k in path:
            node = node.get(k) if isinstance(node, dict) else None
        parent_enabled = True
        if path[0] in ("redis", "email"):
            sect = d.get(path[0])
            parent_enabled = isinstance(sect, dict) and sect.get("enabled", True) is not False
        if node is not None and parent_enabled and str(node).strip():
            out.append((path, node))
    providers = d.get("oidc_providers")
    for i, prov in enumerate(providers if isinstance(providers, list) else []):
        if isinstance(prov, dict) and "client_secret" in prov:
            out.append((("oidc_providers", i, "client_secret"), prov.get("client_secret")))
    return out
DEFAULT_MAX_UPLOAD = 50 * 1024 * 1024  # Synapse's default max_upload_size (50M)
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_synapse_size(v: Any) -> int | None:
    """Synapse sizes: an int (bytes) or a string like ``50M``, ``512K``, ``1G``."""
    if isinstance(v, int):
        return v
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)B?\s*", str(v), re.I)
    if not m:
        return None
    return int(m.group(1)) * _SIZE_UNITS[m.group(2).upper()]


def max_upload_bytes(hs: YamlFile | None) -> int:
    if hs is None or not isinstance(hs.doc.data, dict):
        return DEFAULT_MAX_UPLOAD
    v = parse_synapse_size(hs.doc.data.get("max_upload_size", "50M"))
    return v if v is not None else DEFAULT_MAX_UPLOAD


def _origin(url: str) -> tuple[str, str, int] | None:
    try:
        u = urlsplit(url.strip())
        port = u.port or (443 if u.scheme == "https" else 80)
    except ValueError:
        return None
    if u.scheme not in ("http", "https") or not u.hostname:
        return None
    return u.scheme, u.hostname.lower(), port


def element_base_url(ef: JsonFile) -> tuple[str, int] | None:
    d = ef.data
    dsc = d.get("default_server_config")
    if isinstance(dsc, dict):
        hs = dsc.get("m.homeserver")
        if isinstance(hs, dict) and isinstance(hs.get("base_url"), str):
            return hs["base_url"], ef.line("default_server_config", "m.homeserver", "base_url",
                                           needle='"base_url"')
    if isinstance(d.get("default_hs_url"), str):
        return d["default_hs_url"], ef.line("default_hs_url", needle='"default_hs_url"')
    return None


def check(stack: Stack) -> list[Finding]:
    """Every homeserver/Element rule."""
    out: list[Finding] = []
    for hs in stack.homeservers:
        out.extend(_homeserver(stack, hs))
    return out + _base_urls(stack)


def _homeserver(stack: Stack, hs: YamlFile) -> list[Finding]:
    out: list[Finding] = []
    d = hs.doc.data
    file = stack.rel(hs.path)
    line = hs.doc.line

    # EM007: enable_registration defaults to false, which overrides the token switch.
    if d.get("registration_requires_token") is True and d.get("enable_registration") is not True:
        explicit = "enable_registration" in d
        out.append(Finding(
            "EM007", "error", file,
            line("enable_registration") if explicit else line("registration_requires_token"),
            "registration_requires_token: true with enable_registration "
            + ("false" if explicit else "unset (false)"),
            "enable_registration is the master switch: tokens can be created, but every "
            "user gets 403 'Registration has been disabled'",
            "set `enable_registration: true` (with registration_requires_token: true it stays "
            "invite-only)"))

    # EM009: EC2 host names change on stop/start; server_name can never change.
    sn = str(d.get("server_name", ""))
    if _EC2_HOST.match(sn):
        out.append(Finding(
            "EM009", "error", file, line("server_name"),
            f"server_name {sn!r} is an EC2 host name",
            "server_name is baked into every user id and room alias forever; the EC2 name "
            "changes with the instance's IP, and changing server_name means a new database",
            "choose a stable name (a domain you control, or the Elastic IP) before the "
            "first start"))

    # EM010: every secret the homeserver config carries (deploy-time references are not
    # checked: envsubst or the deploy script fills them in).
    db_raw = d.get("database")
    db: dict[str, Any] = db_raw if isinstance(db_raw, dict) else {}
    args_raw = db.get("args")
    args: dict[str, Any] = args_raw if isinstance(args_raw, dict) else {}
    is_pg = str(db.get("name", "")) in ("psycopg2", "psycopg")
    for path, value in _secrets(d, is_pg):
        if is_reference(value):
            stack.deploy_time.add(str(value).strip().lstrip("${").split("}")[0].split(":")[0])
            continue
        why = weak_secret(value)
        if why:
            name = ".".join(str(p) for p in path)
            out.append(Finding(
                "EM010", "error", file, line(*path), f"{name} is {why}",
                "anyone who knows it can mint access tokens, register admins, or read what "
                "it guards" if path[0] in _SYNAPSE_SECRETS else
                "a guessable or placeholder secret is one leaked backup or one read of the "
                "repository away from what it guards",
                f"generate a random value for {name} (e.g. `openssl rand -hex 32`)"))

    # EM017: Synapse and the postgres container must agree on the password -- when Synapse
    # logs in as the user the container creates (POSTGRES_USER, default postgres).
    pw = args.get("password")
    if is_pg and "password" in args and not weak_secret(pw):
        for pg in stack.services("postgres"):
            ev = service_env(pg, "POSTGRES_PASSWORD")
            user_ev = service_env(pg, "POSTGRES_USER")
            pg_user = user_ev.value if user_ev is not None and user_ev.checked else (
                None if user_ev is not None else "postgres")
            if (ev is not None and ev.checked and not weak_secret(ev.value)
                    and pg_user == str(args.get("user", "")) and ev.value != str(pw)):
                out.append(Finding(
                    "EM017", "error", file, line("database", "args", "password"),
                    f"database.args.password differs from POSTGRES_PASSWORD "
                    f"({stack.rel(ev.file)}:{ev.line})",
                    "Synapse cannot log in to PostgreSQL and exits at start",
                    "use the same value in both places"))

    # EM018: behind nginx, Synapse must trust X-Forwarded-For or every client is nginx.
    if stack.nginx:
        for i, lst in enumerate(d.get("listeners") or []):
            if (isinstance(lst, dict) and lst.get("type") == "http" and not lst.get("x_forwarded")
                    and lst.get("port") in (8008, None)):
                out.append(Finding(
                    "EM018", "warning", file, line("listeners", i),
                    "HTTP listener without x_forwarded: true behind nginx",
                    "Synapse then sees nginx's address for every client: rate limits are "
                    "shared by all users and logs show no client IPs",
                    "add `x_forwarded: true` to the listener"))

    out.extend(_volumes(stack, hs, sn))
    return out


def _volumes(stack: Stack, hs: YamlFile, server_name: str) -> list[Finding]:
    from ..model import volumes

    out: list[Finding] = []
    syn = stack.services("synapse")
    if not syn:
        return out
    svc = syn[0]
    d = hs.doc.data
    cfg_env = service_env(svc, "SYNAPSE_CONFIG_PATH")
    cfg_dir = posixpath.dirname(cfg_env.value if cfg_env is not None and cfg_env.checked
                                and cfg_env.value.startswith("/") else "/data/homeserver.yaml")
    mounts = [(tgt.rstrip("/") or "/", kind) for _s, tgt, kind, _i in volumes(svc)]

    def persisted(path: str) -> bool:
        best = None
        for tgt, kind in mounts:
            if path == tgt or path.startswith(tgt + "/"):
                if best is None or len(tgt) > len(best[0]):
                    best = (tgt, kind)
        return best is not None and best[1] in ("volume", "bind")

    def resolve(p: str) -> str:
        # Relative paths are relative to the config dir in the official image.
        return posixpath.normpath(p if p.startswith("/") else posixpath.join(cfg_dir, p))

    key = d.get("signing_key_path")
    key_path = resolve(str(key)) if key else posixpath.join(cfg_dir, f"{server_name}.signing.key")
    if not persisted(key_path):
        out.append(Finding(
            "EM011", "error", stack.rel(hs.path),
            hs.doc.line("signing_key_path") if key else hs.doc.line("server_name"),
            f"signing key {key_path} is not on a persisted volume of `{svc.name}`",
            "a recreated container generates a new key: other servers and clients reject "
            "everything signed before, and the identity of the server is lost",
            "mount a named volume at the key's directory (e.g. `synapse-data:/data`) and keep "
            "signing_key_path inside it"))
    media = d.get("media_store_path")
    if media and not persisted(resolve(str(media))):
        out.append(Finding(
            "EM016", "warning", stack.rel(hs.path), hs.doc.line("media_store_path"),
            f"media store {resolve(str(media))} is not on a persisted volume of `{svc.name}`",
            "every uploaded file and avatar is lost when the container is recreated",
            "mount a named volume there (e.g. `synapse-media:/media_store`)"))
    return out


def _base_urls_tls(stack: Stack) -> list[Finding]:
    """A TLS-built stack: https is right; Element must still talk to this homeserver."""
    out: list[Finding] = []
    hs = stack.homeserver
    if hs is None or not isinstance(hs.doc.data, dict):
        return out
    d = hs.doc.data
    explicit = "public_baseurl" in d
    pub = str(d["public_baseurl"]) if explicit else f"https://{d.get('server_name', '')}/"
    po = _origin(pub)
    if po is None or "$" in pub:
        return out
    for ef in stack.elements:
        bu = element_base_url(ef)
        if bu is None or "$" in bu[0]:
            continue
        eo = _origin(bu[0])
        if eo is not None and eo != po:
            pub_line = hs.doc.line("public_baseurl")
            where = (f"public_baseurl {pub!r} ({stack.rel(hs.path)}:{pub_line})"
                     if explicit else f"Synapse's default public_baseurl {pub!r} "
                     f"(from server_name, {stack.rel(hs.path)}:{hs.doc.line('server_name')})")
            out.append(Finding(
                "EM008", "error", stack.rel(ef.path), bu[1],
                f"Element's base_url {bu[0]!r} is not this homeserver ({where})",
                "Element logs users in to another server than the one this stack runs",
                "set Element's base_url to the homeserver's public_baseurl"))
    return out


def _base_urls(stack: Stack) -> list[Finding]:
    if stack.tls_intent:
        return _base_urls_tls(stack)
    out: list[Finding] = []
    hs = stack.homeserver
    pub: tuple[str, int] | None = None
    if hs is not None:
        d = hs.doc.data
        file = stack.rel(hs.path)
        if "public_baseurl" not in d:
            out.append(Finding(
                "EM008", "error", file, hs.doc.line("server_name"),
                "public_baseurl is not set",
                f"Synapse then assumes https://{d.get('server_name', '<server_name>')}/ and "
                "hands that to clients, which an HTTP-only host does not serve",
                "set `public_baseurl: http://<public address>/` explicitly"))
        else:
            pub = (str(d["public_baseurl"]), hs.doc.line("public_baseurl"))
            o = _origin(pub[0])
            if o is not None and o[0] == "https":
                out.append(Finding(
                    "EM008", "error", file, pub[1],
                    f"public_baseurl {pub[0]!r} uses https on an HTTP-only host",
                    "clients are told to use https, where nothing listens",
                    "set `public_baseurl: http://<public address>/`"))
    for ef in stack.elements:
        bu = element_base_url(ef)
        if bu is None:
            continue
        eo = _origin(bu[0])
        if eo is None:
            continue
        if eo[0] == "https":
            out.append(Finding(
                "EM008", "error", stack.rel(ef.path), bu[1],
                f"Element's base_url {bu[0]!r} uses https on an HTTP-only host",
                "Element cannot reach the homeserver: nothing listens on 443",
                "use the same http:// URL as public_baseurl"))
            continue
        if pub is not None:
            po = _origin(pub[0])
            if po is not None and po[0] == "http" and po != eo:
                out.append(Finding(
                    "EM008", "error", stack.rel(ef.path), bu[1],
                    f"Element's base_url {bu[0]!r} does not match public_baseurl "
                    f"{pub[0]!r} ({stack.rel(hs.path) if hs else ''}:{pub[1]})",
                    "Element logs in at one address while Synapse builds links, media and "
                    "SSO redirects for the other",
                    "use the same scheme, host and port in both"))
    return out
