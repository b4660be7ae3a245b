"""Recover a deployment's stack secrets from its last rendering (issue 20 #10).

When the secret store is lost (a new laptop, a wiped keyring, a deleted ``secrets.json``)
the rendered stack still holds every stack secret, and the running database still uses
the old PostgreSQL password. Generating new ones would silently rotate them all and
lock Synapse out of its own database; ``stack.render`` refuses, and this reads them back.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .values import SECRET_NAMES

# Where each secret lives in a rendering (relative path, how to find it).
HOMESERVER = "synapse/homeserver.yaml"
POSTGRES_ENV = "postgres.env"


class RecoverError(ValueError):
    """The rendering is missing or does not hold a secret (message says which file)."""


def rendering_exists(stack_dir: Path) -> bool:
    """Whether ``stack_dir`` holds an earlier rendering with secrets in it."""
    return (stack_dir / HOMESERVER).is_file() or (stack_dir / POSTGRES_ENV).is_file()


def recover_secrets(stack_dir: Path) -> dict[str, str]:
    """Every stack secret (``SECRET_NAMES``) as the rendering in ``stack_dir`` holds it."""
    hs_path = stack_dir / HOMESERVER
    try:
        hs = yaml.safe_load(hs_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecoverError(f"{hs_path}: no such file; no rendering to recover from") from None
    except (OSError, yaml.YAMLError) as e:
        raise RecoverError(f"{hs_path}: cannot read it: {e}") from None
    if not isinstance(hs, dict):
        raise RecoverError(f"{hs_path}: not a Synapse configuration")
    found: dict[str, str] = {}
    for name in ("registration_shared_secret", "macaroon_secret_key", "form_secret"):
        if isinstance(hs.get(name), str) and hs[name]:
            found[name] = hs[name]
    db = hs.get("database")
    password = db.get("args", {}).get("password") if isinstance(db, dict) else None
    env_path = stack_dir / POSTGRES_ENV
    if env_path.is_file():
        for line in env_path.read_text(encoding="utf-8").splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() == "POSTGRES_PASSWORD" and value:
                if isinstance(password, str) and password and password != value:
                    raise RecoverError(f"{env_path} and {hs_path} disagree on the "
                                       f"PostgreSQL password; recover it by hand")
                password = value
    if isinstance(password, str) and password:
        found["postgres_password"] = password
    missing = [n for n in SECRET_NAMES if n not in found]
    if missing:
        raise RecoverError(f"{stack_dir}: the rendering does not hold {', '.join(missing)}")
    return found
