"""The Docker test double on a FakeInstance, driven over real SSH like the runbook drives it.

The stack is rendered from the project's templates (default parameters), uploaded with
sftp, and brought up in the research's incremental order with exactly the commands of the
command contract (docs/testing-rehearsal.md). Every service is real: PostgreSQL initialised
from the compose file's POSTGRES_INITDB_ARGS, Synapse on the uploaded homeserver.yaml,
nginx on the uploaded default.conf, each on its own loopback address.
"""

from __future__ import annotations

import gzip
import json
import os
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from elematrix_tui.stack.render import render_stack
from elematrix_tui.stack.values import StackValues
from tests.conftest import require
from tests.rehearsal.conftest import Remote
from tests.rehearsal.fakehost import fakedocker
from tests.rehearsal.instance import AWS_CLI, FakeInstance

SECRETS = {
    "registration_shared_secret": "rehearsalRegSecretK2j4H6g8F0d1S3",
    "macaroon_secret_key": "rehearsalMacaroonL9k7J5h3G1f2D4s6",
    "form_secret": "rehearsalFormSecretP8o6I4u2Y0t1R3",
    "postgres_password": "rehearsalPgPasswordM5n7B9v1C3x2Z4",
}
SERVER_NAME = "rehearsal.test"
BUCKET = "rehearsal-backups"
ENCODING_SQL = ("SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database "
                "WHERE datname = current_database()")


def _get(url: str, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, dict(r.headers), r.read()


def _ps(remote: Remote, dc: str) -> dict[str, dict[str, Any]]:
    r = remote.ok(f"{dc} ps --format json", sudo=True)
    rows = [json.loads(line) for line in r.text.splitlines() if line.strip()]
    return {row["Service"]: row for row in rows}


def _pids(inst: FakeInstance) -> dict[str, int]:
    return {p.stem: json.loads(p.read_text())["pid"]
            for p in (inst.state_root / "run" / "elematrix").glob("*.json")}


def test_stack_comes_up_incrementally_over_ssh(fake_instance: FakeInstance, remote: Remote,
                                               moto_env: dict[str, str],
                                               tmp_path: Path) -> None:
    t_start = time.monotonic()
    timings: dict[str, float] = {}
    inst = fake_instance
    remote_dir = f"{inst.sshd.user_dir('opt')}/stack"
    values = StackValues(server_name=SERVER_NAME, public_address=inst.address,
                         deployment="rehearsal", remote_dir=remote_dir,
                         backup_bucket=BUCKET, aws_region="us-east-1")
    assert values.public_baseurl == f"http://{inst.address}/"
    rendered = render_stack(values, SECRETS, tmp_path / "rendered").path
    remote.ok(f"mkdir -p {remote_dir}")
    remote.put_tree(rendered, remote_dir)
    dc = f"docker compose --project-directory {remote_dir}"
    cd_dc = f"cd {remote_dir} && docker compose"

    # Day-0 probes the runbook makes before the stack.
    assert remote.ok("cloud-init status --wait").text.strip() == "status: done"
    version = remote.ok("docker compose version").text.strip()
    assert version == "Docker Compose version v2.40.3 (elematrix test double)"
    assert "test double" in remote.ok("docker info").text
    bad = remote.run(f"{dc} frobnicate", sudo=True)
    assert bad.rc == 1 and "test double: unsupported: compose frobnicate" in bad.err
    bad = remote.run(f"{dc} up -d --build", sudo=True)
    assert bad.rc == 1 and "test double: unsupported:" in bad.err

    # 1. PostgreSQL alone; its encoding/collation checked before Synapse writes anything.
    t0 = time.monotonic()
    r = remote.ok(f"{cd_dc} up -d --wait postgres", sudo=True)
    assert "elematrix-postgres-1  Healthy" in r.err
    timings["up_postgres_s"] = time.monotonic() - t0
    assert inst.initdb_count() == 1
    r = remote.ok(f"{dc} exec -T postgres psql -U synapse -d synapse -At -c "
                  f"\"{ENCODING_SQL}\"", sudo=True)
    assert r.text.strip() == "UTF8|C|C"
    initdb_line = (inst.state_root / "initdb.log").read_text()
    assert "--encoding=UTF8 --lc-collate=C --lc-ctype=C" in initdb_line
    assert SECRETS["postgres_password"] not in initdb_line
    # Outside the container the password is required (the image's pg_hba rule).
    assert "scram-sha-256" in (inst.volume_dir("postgres-data") / "pg_hba.conf").read_text()

    # 2. Synapse runs as uid 991 in its container: the uploaded 0600 config (owned by the
    #    login user here) is unreadable to it until the runbook chowns it.
    bad = remote.run(f"{dc} up -d --wait synapse", sudo=True)
    assert bad.rc == 1 and "exited" in bad.err
    assert "PermissionError" in remote.ok(f"{dc} logs synapse", sudo=True).text
    remote.ok(f"chown -R 991:991 {remote_dir}/synapse", sudo=True)
    # Health through its own healthcheck command, signing key on the volume.
    t0 = time.monotonic()
    r = remote.ok(f"{dc} up -d --wait synapse", sudo=True)
    timings["up_synapse_s"] = time.monotonic() - t0
    assert "elematrix-postgres-1  Running" in r.err  # not restarted
    assert remote.ok(f"{dc} exec -T synapse curl -fSs http://localhost:8008/health",
                     sudo=True).text.strip() == "OK"
    key_file = f"/data/{SERVER_NAME}.signing.key"
    remote.ok(f"{dc} exec -T synapse test -s {key_file}", sudo=True)
    signing_key = remote.ok(f"{dc} exec -T synapse cat {key_file}", sudo=True).text
    assert signing_key.startswith("ed25519 ")
    # The uploaded config is untouched; the double runs an adapted copy.
    uploaded = Path(remote_dir, "synapse", "homeserver.yaml").read_text()
    assert (rendered / "synapse" / "homeserver.yaml").read_text() == uploaded
    assert 'bind_addresses: ["0.0.0.0"]' in uploaded

    # 3. Everything: nginx published on the instance address, Element behind it.
    t0 = time.monotonic()
    remote.ok(f"{cd_dc} up -d --wait", sudo=True)
    timings["up_all_s"] = time.monotonic() - t0
    ps = _ps(remote, dc)
    assert set(ps) == {"postgres", "synapse", "element", "nginx"}
    assert all(row["State"] == "running" and row["Health"] == "healthy"
               for row in ps.values()), ps
    assert ps["nginx"]["Publishers"][0]["PublishedPort"] == 80
    table = remote.ok(f"{dc} ps", sudo=True).text
    assert "elematrix-synapse-1" in table and "(healthy)" in table

    base = f"http://{inst.address}"
    status, headers, body = _get(f"{base}/_matrix/client/versions")
    assert status == 200 and "versions" in json.loads(body)
    status, headers, body = _get(f"{base}/.well-known/matrix/client")
    assert json.loads(body) == {"m.homeserver": {"base_url": base}}
    assert headers.get("Access-Control-Allow-Origin") == "*"
    status, _, body = _get(f"{base}/config.json")
    assert json.loads(body)["default_server_config"]["m.homeserver"]["server_name"] == \
        SERVER_NAME
    assert b"Element" in _get(f"{base}/")[2]
    # The admin API is not published (nginx answers 404 itself).
    with pytest.raises(urllib.error.HTTPError) as e:
        _get(f"{base}/_synapse/admin/v1/server_version")
    assert e.value.code == 404
    # ... but Synapse is published on the instance's loopback, for the SSH port forward.
    assert ps["synapse"]["Publishers"][0]["URL"] == "127.0.0.1"
    status, _, body = _get("http://127.0.0.1:8008/_synapse/admin/v1/server_version")
    assert status == 200 and "server_version" in json.loads(body)

    # (The matrix.validate gate on this stack: test_deploy_sketch_through_the_cli.)

    # 4. The backup's pipes: pg_dump through gzip, the signing key, the media tar.
    r = remote.ok(f"{dc} exec -T postgres pg_dump -U synapse -d synapse --no-owner | gzip -c",
                  sudo=True)
    dump = gzip.decompress(r.out).decode()
    assert "CREATE TABLE public.users" in dump
    r = remote.ok(f"{dc} exec -T synapse tar -C /media_store -czf - . | wc -c", sudo=True)
    assert int(r.text) > 0
    remote.ok(f"{dc} exec -T postgres psql -U synapse -d synapse -c "
              "\"CREATE TABLE rehearsal_marker (v text); "
              "INSERT INTO rehearsal_marker VALUES ('kept')\"", sudo=True)
    # Synapse reaches `postgres:5432` over TCP, where the password is checked for real.
    import subprocess

    pg_addr = inst.service_addresses["postgres"]
    r = remote.ok(f"{dc} exec -T postgres psql -U synapse -d synapse -At -c \"SELECT count(*) "
                  "FROM pg_stat_activity WHERE usename = 'synapse' AND client_addr IS NOT "
                  "NULL\"", sudo=True)
    assert int(r.text) >= 1
    wrong = subprocess.run(["/usr/lib/postgresql/15/bin/psql", "-h", pg_addr, "-U", "synapse",
                            "-d", "synapse", "-c", "SELECT 1"], capture_output=True, text=True,
                           env={**os.environ, "PGPASSWORD": "wrong-password"})
    assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr
    # The container's own TCP loopback (trust) is the unix socket here.
    assert remote.ok(f"{dc} exec -T postgres psql -h localhost -U synapse -d synapse -At -c "
                     "'SELECT 1'", sudo=True).text.strip() == "1"
    # nginx inside its container: test and reload the configuration.
    remote.ok(f"{dc} exec -T nginx nginx -t", sudo=True)
    remote.ok(f"{dc} exec -T nginx nginx -s reload", sudo=True)
    assert _get(f"{base}/.well-known/matrix/client")[0] == 200

    # stdin passes through too (a restore pipes a dump into psql).
    r = remote.ok(f"{dc} exec -T postgres psql -U synapse -d synapse -At", sudo=True,
                  stdin=b"SELECT 41 + 1;\n")
    assert r.text.strip() == "42"
    logs = remote.ok(f"{dc} logs --tail 5 synapse", sudo=True).text
    assert len(logs.splitlines()) == 5 and logs.startswith("elematrix-synapse-1  | ")

    # 5. up -d again: nothing changes, the database was initialised once.
    before = _pids(inst)
    r = remote.ok(f"{cd_dc} up -d", sudo=True)
    assert "Started" not in r.err and r.err.count("  Running") == 4, r.err
    assert _pids(inst) == before
    assert inst.initdb_count() == 1

    # stop/restart one service: only that one changes.
    remote.ok(f"{dc} stop element", sudo=True)
    assert set(_ps(remote, dc)) == {"postgres", "synapse", "nginx"}
    r = remote.ok(f"{dc} up -d element", sudo=True)
    assert "elematrix-element-1  Started" in r.err and r.err.count("Started") == 1
    old_nginx = _pids(inst)["nginx"]
    remote.ok(f"{dc} restart nginx", sudo=True)
    assert _pids(inst)["nginx"] != old_nginx
    before = _pids(inst)
    remote.ok(f"{dc} up -d --wait", sudo=True)
    assert _pids(inst) == before

    # 6. down, then up: same data, same signing key, no second initdb.
    t0 = time.monotonic()
    remote.ok(f"{dc} down", sudo=True)
    timings["down_s"] = time.monotonic() - t0
    assert _ps(remote, dc) == {}
    assert not any(fakedocker.Running(**json.loads(p.read_text())).alive()
                   for p in (inst.state_root / "run").glob("*/*.json"))
    remote.ok(f"{dc} up -d --wait", sudo=True)
    timings["down_up_s"] = time.monotonic() - t0
    assert inst.initdb_count() == 1
    assert remote.ok(f"{dc} exec -T synapse cat {key_file}", sudo=True).text == signing_key
    r = remote.ok(f"{dc} exec -T postgres psql -U synapse -d synapse -At -c "
                  "'SELECT v FROM rehearsal_marker'", sudo=True)
    assert r.text.strip() == "kept"
    assert _get(f"{base}/_matrix/client/versions")[0] == 200

    # 7. The boot unit, installed like the runbook does: enable --now runs its ExecStart.
    remote.ok(f"install -m 0644 {remote_dir}/systemd/elematrix-stack.service "
              f"{inst.unit_dir}/", sudo=True)
    remote.ok("systemctl daemon-reload", sudo=True)
    r = remote.ok("systemctl enable --now elematrix-stack.service", sudo=True)
    assert "Running" in r.err and "Started" not in r.err
    assert remote.ok("systemctl is-active elematrix-stack.service").text.strip() == "active"
    assert remote.ok("systemctl is-enabled elematrix-stack.service").text.strip() == "enabled"
    assert remote.run("systemctl enable --now elematrix-stack.service").rc == 1  # no sudo

    # 8. The backup unit, for real: backup.sh pipes `docker compose exec` output into the
    #    real aws CLI, which puts it into moto's S3.
    require(AWS_CLI.exists(), f"the aws CLI ({AWS_CLI}; scripts/setup.sh --test installs it)")
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket=BUCKET)
    t0 = time.monotonic()
    remote.ok(f"install -m 0644 {remote_dir}/systemd/elematrix-backup.service "
              f"{remote_dir}/systemd/elematrix-backup.timer {inst.unit_dir}/", sudo=True)
    remote.ok("systemctl enable --now elematrix-backup.timer", sudo=True)
    remote.ok("systemctl start elematrix-backup.service", sudo=True)
    timings["backup_s"] = time.monotonic() - t0
    assert remote.run("systemctl is-active elematrix-backup.service").text.strip() == \
        "inactive"  # a oneshot without RemainAfterExit
    objects = {o["Key"].rsplit("/", 1)[1]: o["Key"]
               for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert set(objects) == {"synapse.sql.gz", "signing.key", "config.tar.gz", "media.tar.gz"}
    assert all(k.startswith("rehearsal/") for k in objects.values())
    dump = gzip.decompress(s3.get_object(Bucket=BUCKET, Key=objects["synapse.sql.gz"])
                           ["Body"].read()).decode()
    assert "rehearsal_marker" in dump
    assert s3.get_object(Bucket=BUCKET, Key=objects["signing.key"])["Body"].read().decode() \
        == signing_key

    timings["total_s"] = time.monotonic() - t_start
    print("rehearsal fakehost timings:", json.dumps({k: round(v, 2)
                                                      for k, v in timings.items()}))


def test_a_dropped_session_does_not_break_up(fake_instance: FakeInstance, remote: Remote,
                                             tmp_path: Path) -> None:
    """The runner killed mid-`up` (chaos): the double finishes like the daemon would, and
    the resumed run's `up -d --wait` waits for it and finds the stack up, initialised once."""
    inst = fake_instance
    remote_dir = f"{inst.sshd.user_dir('opt')}/stack"
    values = StackValues(server_name=SERVER_NAME, public_address=inst.address,
                         deployment="rehearsal", remote_dir=remote_dir)
    rendered = render_stack(values, SECRETS, tmp_path / "rendered").path
    remote.ok(f"mkdir -p {remote_dir}")
    remote.put_tree(rendered, remote_dir)
    remote.ok(f"chown -R 991:991 {remote_dir}/synapse", sudo=True)
    dc = f"docker compose --project-directory {remote_dir}"
    transport = remote.client.get_transport()
    assert transport is not None
    chan = transport.open_session()
    chan.exec_command(f"sudo -n -- sh -c '{dc} up -d --wait'")
    # Kill the connection while initdb/PostgreSQL start (the first second of `up`).
    deadline = time.monotonic() + 20
    while not (inst.state_root / "run" / "elematrix" / ".lock").exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.3)
    inst.sshd.signal_connections(9)
    remote.close()
    again = Remote(inst)
    try:
        r = again.ok(f"{dc} up -d --wait", sudo=True)
        # The killed run's `up` held the project lock and finished: nothing left to start.
        assert r.err.count("  Running") == 4 and "Started" not in r.err, r.err
        assert inst.initdb_count() == 1
        assert _get(f"http://{inst.address}/_matrix/client/versions")[0] == 200
    finally:
        again.close()


def test_unsupported_commands_fail_loudly(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """No instance needed: the parser refuses what the double does not emulate."""
    (tmp_path / "fakehost.json").write_text(json.dumps({
        "address": "127.0.0.9", "services": {}, "pg_bin": "/x", "nginx_bin": "/x",
        "synapse_python": "/x", "python": "/x", "runtime": str(tmp_path),
        "unit_dirs": [str(tmp_path)], "env": {}, "shim_dir": str(tmp_path),
        "bin_dir": str(tmp_path)}))
    (tmp_path / "docker-compose.yml").write_text(
        "services:\n  db:\n    image: postgres:15\n")
    monkeypatch.setenv(fakedocker.STATE_ENV, str(tmp_path))
    monkeypatch.setenv("ELEMATRIX_FAKEHOST_CALLER_UID", "0")
    monkeypatch.chdir(tmp_path)
    cases = [["docker", "run", "x"], ["docker", "compose", "--dry-run", "up"],
             ["docker", "compose", "up"], ["docker", "compose", "up", "-d", "--build"],
             ["docker", "compose", "logs", "-f"], ["systemctl", "mask", "x"],
             ["cloud-init", "init"]]
    for argv in cases:
        assert fakedocker.main(argv) == 1, argv
        assert "test double: unsupported:" in capsys.readouterr().err, argv
    assert fakedocker.main(["docker", "compose", "exec", "-T", "nope", "true"]) == 1
    assert "no such service: nope" in capsys.readouterr().err
    assert fakedocker.main(["systemctl", "is-active", "docker"]) == 0
    assert capsys.readouterr().out.strip() == "active"
    # Compose features the double does not emulate are refused, not ignored.
    for compose in ("services:\n  web:\n    image: httpd:2\n",
                    "services:\n  db:\n    image: postgres:15\n    network_mode: host\n",
                    "services:\n  db:\n    image: postgres:15\nnetworks:\n  x: {}\n",
                    "services:\n  db:\n    image: postgres:15\n    ports: ['5432-5433:5432']\n",
                    "services:\n  db:\n    image: postgres:${TAG}\n"):
        (tmp_path / "docker-compose.yml").write_text(compose)
        assert fakedocker.main(["docker", "compose", "ps"]) == 1, compose
        assert "test double: unsupported:" in capsys.readouterr().err, compose


def test_env_file_and_path_mapping(tmp_path: Path) -> None:
    env = tmp_path / "e.env"
    env.write_text("# c\nA=1\nB='two words'\n\nC=\"x=y\"\n")
    assert fakedocker.parse_env_file(env) == {"A": "1", "B": "two words", "C": "x=y"}
    host = fakedocker.Host(tmp_path, "127.0.0.9", {"s": "127.0.10.3"}, Path("/pg"),
                           Path("/ng"), Path("/py/bin/python"), Path("/py"), tmp_path,
                           [], {}, tmp_path, tmp_path)
    proj = fakedocker.Project(tmp_path, tmp_path / "c.yml", "p", {"volumes": {"d": None}},
                              host)
    svc = fakedocker.Service("s", {"image": "matrixdotorg/synapse:v1",
                                   "volumes": ["./cfg:/config:ro", "d:/data"]}, proj)
    assert svc.kind == "synapse"
    data = tmp_path / "volumes" / "p_d"
    assert svc.map_path("/data/k.key") == f"{data}/k.key"
    assert svc.map_path("/database/x") == "/database/x"
    assert fakedocker.exec_argv(svc, ["curl", "http://localhost:8008/health", "/config"]) == \
        ["curl", "http://127.0.10.3:8008/health", f"{tmp_path}/cfg"]
    assert os.path.isdir(data)


def test_concurrent_instances_resolve_their_own_services(tmp_path: Path) -> None:
    """Two instances at once (two engineers' test runs on one machine): each session sees
    its own service addresses; the machine's /etc/hosts is not touched (namespace mode)."""
    from tests.rehearsal.instance import missing_binaries, namespaces_work

    require(not missing_binaries(), "the fake instance's prerequisites")
    require(namespaces_work(), "unshare -m (a private /etc/hosts for the instance's sshd)")
    hosts_before = Path("/etc/hosts").read_text()
    a = FakeInstance("127.0.0.201", tmp_path / "a")
    b = FakeInstance("127.0.0.202", tmp_path / "b")
    try:
        a.start()
        b.start()
        assert a.service_net != b.service_net
        assert Path("/etc/hosts").read_text() == hosts_before
        for inst in (a, b):
            r = Remote(inst)
            try:
                got = r.ok("getent hosts postgres synapse element nginx").text.split()
                assert got[::2] == [inst.service_addresses[n] for n in
                                    ("postgres", "synapse", "element", "nginx")]
                # Through sudo too (the runbook's commands run under sudo -n).
                assert r.ok("getent hosts synapse", sudo=True).text.split()[0] == \
                    inst.service_addresses["synapse"]
                # And from the test process, without SSH.
                local = inst.run_local("getent hosts nginx; docker compose version")
                assert local.returncode == 0
                assert local.stdout.decode().split()[0] == inst.service_addresses["nginx"]
            finally:
                r.close()
    finally:
        b.stop()
        a.stop()
    assert Path("/etc/hosts").read_text() == hosts_before


def test_hosts_file_mode_adds_and_removes_its_block(tmp_path: Path) -> None:
    """The fallback where namespaces are not available: a marked block, removed at stop."""
    from tests.rehearsal.instance import missing_binaries

    require(not missing_binaries(), "the fake instance's prerequisites")
    inst = FakeInstance("127.0.0.203", tmp_path / "h", isolation="hosts")
    try:
        inst.start()
        text = Path("/etc/hosts").read_text()
        assert f"# BEGIN elematrix-fakehost {inst.state_root}" in text
        assert f"{inst.service_addresses['postgres']}\tpostgres" in text
    finally:
        inst.stop()
    assert f"elematrix-fakehost {inst.state_root}" not in Path("/etc/hosts").read_text()


def _deploy_runbook(inst: FakeInstance) -> dict[str, Any]:
    """A sketch of the deploy phase in the command contract, through the real actions."""
    ssh = {"host": "{{ params.host }}", "port": "{{ params.ssh_port }}",
           "key_path": "{{ params.key_path }}",
           "host_key_fingerprints": "{{ params.console }}"}
    dc = "docker compose --project-directory {{ params.remote_dir }}"

    def run(id_: str, command: str, sudo: bool = True, **kw: Any) -> dict[str, Any]:
        return {"id": id_, "action": "ssh.run",
                "with": {**ssh, "command": command, "sudo": sudo, **kw}}

    return {
        "runbook": "rehearsal-deploy-sketch",
        "title": "Deploy phase sketch against the fake instance",
        "params": [{"name": n, "type": "string", "help": n} for n in
                   ("host", "ssh_port", "key_path", "console", "remote_dir", "unit_dir")],
        "phases": [{"id": "deploy", "title": "Deploy", "steps": [
            {"id": "render", "action": "stack.render",
             "with": {"server_name": SERVER_NAME, "public_address": "{{ params.host }}",
                      "remote_dir": "{{ params.remote_dir }}"}},
            run("cloud_init", "cloud-init status --wait", sudo=False,
                expect_output="status: done", read_only=True),
            run("compose", "docker compose version", sudo=False,
                expect_output="Docker Compose version v2", read_only=True),
            {"id": "upload", "action": "ssh.upload",
             "with": {**ssh, "source": "{{ steps.render.path }}",
                      "dest": "{{ params.remote_dir }}", "sudo": True,
                      "modes": {"synapse/homeserver.yaml": "0600", "postgres.env": "0600",
                                "backup.sh": "0755"}}},
            run("synapse_owner", "chown -R 991:991 {{ params.remote_dir }}/synapse"),
            run("up_postgres", f"{dc} up -d --wait postgres", idempotent=True),
            run("collation", f"{dc} exec -T postgres psql -U synapse -d synapse -At -c "
                f"\"{ENCODING_SQL}\"", expect_output="UTF8|C|C", read_only=True),
            run("up_synapse", f"{dc} up -d --wait synapse", idempotent=True),
            run("signing_key", f"{dc} exec -T synapse test -s /data/{SERVER_NAME}.signing.key",
                read_only=True),
            run("up_all", f"{dc} up -d --wait", idempotent=True),
            run("units", "install -m 0644 {{ params.remote_dir }}/systemd/elematrix-stack.service "
                "{{ params.unit_dir }}/ && systemctl daemon-reload && "
                "systemctl enable --now elematrix-stack.service"),
            # Synapse's admin API, published on the instance's loopback only, through SSH.
            {"id": "admin_forward", "action": "ssh.forward",
             "with": {**ssh, "remote_port": 8008}},
        ], "gates": [
            run("stack_healthy", f"{dc} ps --format json", read_only=True,
                expect_output='re:"Service": "nginx".*"Health": "healthy"'),
            {"id": "e2ee", "action": "matrix.validate",
             "with": {"base_url": "http://{{ params.host }}", "server_name": SERVER_NAME,
                      "admin_url": "{{ steps.admin_forward.url }}", "total_timeout": 180}},
        ]}],
    }


def test_deploy_sketch_through_the_cli(fake_instance: FakeInstance, tmp_path: Path,
                                       elematrix: str) -> None:
    """The real CLI, runner, stack.render, ssh.upload/run/forward and the matrix.validate
    gate (through nginx, admin API through the SSH forward) against the double, twice: the
    second run changes nothing on the instance (initdb once, same processes)."""
    import subprocess

    import yaml

    inst = fake_instance
    rb = tmp_path / "deploy.yaml"
    rb.write_text(yaml.safe_dump(_deploy_runbook(inst), sort_keys=False))
    remote_dir = f"{inst.state_root}/opt/stack"
    args = [elematrix, "run", str(rb), "--deployment", "sketch", "--yes", "--quiet",
            "--set", f"host={inst.host}", "--set", f"ssh_port={inst.port}",
            "--set", f"key_path={inst.key_path}", "--set", f"console={inst.console_output()}",
            "--set", f"remote_dir={remote_dir}", "--set", f"unit_dir={inst.unit_dir}"]
    t0 = time.monotonic()
    r = subprocess.run(args, capture_output=True, text=True, timeout=600)
    first_s = time.monotonic() - t0
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    first_out = r.stdout + r.stderr
    assert inst.initdb_count() == 1
    pids = _pids(inst)
    assert set(pids) == {"postgres", "synapse", "element", "nginx"}
    assert _get(f"http://{inst.address}/_matrix/client/versions")[0] == 200
    t0 = time.monotonic()
    r = subprocess.run(args, capture_output=True, text=True, timeout=600)
    second_s = time.monotonic() - t0
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert inst.initdb_count() == 1 and _pids(inst) == pids
    # The secrets stack.render generated never show in the CLI's output.
    hs = yaml.safe_load(Path(remote_dir, "synapse", "homeserver.yaml").read_text())
    secrets = [hs["registration_shared_secret"], hs["macaroon_secret_key"],
               hs["form_secret"], hs["database"]["args"]["password"]]
    assert all(len(x) >= 16 and x not in first_out + r.stdout + r.stderr for x in secrets)
    print(f"deploy sketch via the CLI: first run {first_s:.1f}s, second run {second_s:.1f}s")


def test_moto_hands_out_the_instance(fake_instance: FakeInstance,
                                     moto_env: dict[str, str]) -> None:
    """With moto_points_at, the EIP is the instance's address and the console output pins
    its real host keys (what the infra phase reads)."""
    import boto3

    from elematrix_tui.actions.sshconn import parse_fingerprints
    from tests.rehearsal.instance import moto_points_at

    ec2 = boto3.client("ec2", endpoint_url=moto_env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    with moto_points_at(fake_instance):
        ssm = boto3.client("ssm", endpoint_url=moto_env["AWS_ENDPOINT_URL"],
                           region_name="us-east-1", aws_access_key_id="testing",
                           aws_secret_access_key="testing")
        ami = ssm.get_parameter(Name="/aws/service/ami-amazon-linux-latest/"
                                "al2023-ami-kernel-default-x86_64")["Parameter"]["Value"]
        iid = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1,
                                InstanceType="t3.medium")["Instances"][0]["InstanceId"]
        alloc = ec2.allocate_address(Domain="vpc")
        assert alloc["PublicIp"] == fake_instance.address
        ec2.associate_address(AllocationId=alloc["AllocationId"], InstanceId=iid)
        out = ec2.get_console_output(InstanceId=iid)["Output"]
    assert sorted(parse_fingerprints(out)) == sorted(fake_instance.fingerprints)
    desc = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert desc["PublicIpAddress"] == fake_instance.address


def test_a_stack_without_the_initdb_args_fails_as_on_aws(fake_instance: FakeInstance,
                                                        remote: Remote,
                                                        tmp_path: Path) -> None:
    """Faithful on purpose: drop POSTGRES_INITDB_ARGS from the uploaded compose file (as a
    broken template would) and Synapse refuses the database's collation, as it would on
    the instance; the double does not paper over it."""
    inst = fake_instance
    remote_dir = f"{inst.sshd.user_dir('opt')}/stack"
    values = StackValues(server_name=SERVER_NAME, public_address=inst.address,
                         deployment="rehearsal", remote_dir=remote_dir)
    rendered = render_stack(values, SECRETS, tmp_path / "rendered").path
    compose = rendered / "docker-compose.yml"
    text = compose.read_text()
    broken = "\n".join(line for line in text.splitlines()
                       if "POSTGRES_INITDB_ARGS" not in line) + "\n"
    assert broken != text
    compose.write_text(broken)
    remote.ok(f"mkdir -p {remote_dir}")
    remote.put_tree(rendered, remote_dir)
    remote.ok(f"chown -R 991:991 {remote_dir}/synapse", sudo=True)
    dc = f"docker compose --project-directory {remote_dir}"
    remote.ok(f"{dc} up -d --wait postgres", sudo=True)
    r = remote.ok(f"{dc} exec -T postgres psql -U synapse -d synapse -At -c "
                  f"\"{ENCODING_SQL}\"", sudo=True)
    # The image's LANG instead (en_US.utf8, or C.UTF-8 where that is not installed).
    assert r.text.strip().startswith("UTF8|") and r.text.strip() != "UTF8|C|C", r.text
    bad = remote.run(f"{dc} up -d --wait synapse", sudo=True, timeout=120)
    assert bad.rc == 1 and "exited" in bad.err
    logs = remote.ok(f"{dc} logs synapse", sudo=True).text
    assert "IncorrectDatabaseSetup" in logs or "incorrect collation" in logs.lower() or \
        "incorrect encoding" in logs.lower(), logs[-2000:]
