"""compose.up / compose.exec / postgres.locale over the real sshd on the real Docker engine:
check() says "in place" after apply, and names what would change after a planted drift."""

from __future__ import annotations

import subprocess

from elematrix_tui.actions.compose import Exec, Up
from elematrix_tui.actions.hostfacts import CHANGE_NOTE
from elematrix_tui.actions.postgres_host import Locale
from elematrix_tui.engine.action import ActionFailed
from elematrix_tui.engine.standalone import StandaloneContext
from tests.hostfacts.conftest import NGINX, POSTGRES, Project, have_image
from tests.support.sshd import SshServer

TWO = f"""services:
  web:
    image: {NGINX}
    # An env_file: 'docker compose config --hash' hashes it unlike the container label
    # (compose 2.40.3), so only compose's own dry run tells "in place" (the defect found).
    env_file: ./web.env
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:80/"]
      interval: 1s
      timeout: 2s
      retries: 5
  idle:
    image: {NGINX}
    command: ["sleep", "3600"]
    stop_grace_period: 1s
    depends_on: [web]
"""


def _changes(ctx: StandaloneContext) -> list[list[str]]:
    return [d["changes"] for k, d in ctx.notes if k == CHANGE_NOTE]


def test_compose_up_in_place_after_apply_and_names_each_drift(
        sshd: SshServer, ctx: StandaloneContext, project: Project) -> None:
    project.write(TWO)
    (project.dir / "web.env").write_text("GREETING=hello\n")
    inputs = sshd.inputs(project_dir=str(project.dir), sudo=True, timeout=120)
    chk = ctx.check(Up(), inputs)
    assert chk.in_sync is False
    created = ["create idle", f"create network {project.name}_default", "create web"]
    assert sorted(chk.changes) == created

    r = ctx.run(Up(), inputs)
    assert r.status == "changed" and sorted(r.outputs["changes"]) == created
    assert r.outputs["services"] == {"web": "running (healthy)", "idle": "running"}
    assert ctx.check(Up(), inputs).in_sync is True
    ctx.notes.clear()
    web, idle = project.container_id("web"), project.container_id("idle")
    again = ctx.run(Up(), inputs)
    assert again.status == "ok" and again.message.startswith("in place")
    assert _changes(ctx) == []  # nothing ran on the host that changes anything

    # A stopped service.
    assert project.compose("stop", "idle").returncode == 0
    chk = ctx.check(Up(), inputs)
    assert chk.in_sync is False and chk.changes == ["start idle (it is exited)"]
    # Only web (and what it depends on) is asked for: idle's state is not web's business.
    assert ctx.check(Up(), {**inputs, "services": ["web"]}).in_sync is True
    assert ctx.run(Up(), inputs).status == "changed"
    assert project.container_id("idle") == idle  # started again, not recreated

    # An edited service: only that one is recreated.
    project.write(TWO.replace('"3600"', '"3601"'))
    chk = ctx.check(Up(), inputs)
    assert chk.changes == ["recreate idle (its configuration or image changed)"]
    ctx.notes.clear()
    assert ctx.run(Up(), inputs).status == "changed"
    assert _changes(ctx) == [["recreate idle (its configuration or image changed)"]]
    assert project.container_id("web") == web
    assert project.container_id("idle") != idle
    assert ctx.check(Up(), inputs).in_sync is True
    # The env_file's content is the service's configuration too.
    (project.dir / "web.env").write_text("GREETING=changed\n")
    assert ctx.check(Up(), inputs).changes == ["recreate web (its configuration or image "
                                               "changed)"]


def test_compose_up_unknown_service_is_a_clear_failure(
        sshd: SshServer, ctx: StandaloneContext, project: Project) -> None:
    project.write(TWO)
    (project.dir / "web.env").write_text("GREETING=hello\n")
    inputs = sshd.inputs(project_dir=str(project.dir), sudo=True, services=["synapse"])
    try:
        ctx.run(Up(), inputs)
    except ActionFailed as e:
        assert "no service synapse" in e.message and "idle, web" in (e.diagnosis or "")
    else:
        raise AssertionError("an unknown service must fail")


def test_compose_exec_reads_facts(sshd: SshServer, ctx: StandaloneContext,
                                  project: Project) -> None:
    project.write(TWO)
    (project.dir / "web.env").write_text("GREETING=hello\n")
    base = sshd.inputs(project_dir=str(project.dir), sudo=True)
    ctx.run(Up(), base)
    probe = {**base, "service": "web", "read_only": True, "expect_output": "present",
             "command": "test -s /etc/nginx/nginx.conf && echo present"}
    assert ctx.check(Exec(), probe).in_sync is True
    assert ctx.run(Exec(), probe).status == "ok"
    missing = {**probe, "command": "test -s /nope && echo present"}
    chk = ctx.check(Exec(), missing)
    assert chk.in_sync is False and "not yet (exit 1" in chk.changes[0]

    make = {**base, "service": "web", "creates": "/tmp/made",
            "command": ["sh", "-c", "echo x > /tmp/made"]}
    chk = ctx.check(Exec(), make)
    assert chk.in_sync is False and "/tmp/made is missing" in chk.changes[0]
    assert ctx.run(Exec(), make).status == "changed"
    assert ctx.check(Exec(), make).in_sync is True
    ctx.notes.clear()
    assert ctx.run(Exec(), make).status == "ok"
    assert _changes(ctx) == []
    # Drift: the file removed in the container.
    subprocess.run(["docker", "exec", f"{project.name}-web-1", "rm", "/tmp/made"], check=True)
    assert ctx.check(Exec(), make).in_sync is False


def test_postgres_locale_reads_the_database(sshd: SshServer, ctx: StandaloneContext,
                                            project: Project) -> None:
    have_image(POSTGRES)
    project.write(f"""services:
  postgres:
    image: {POSTGRES}
    environment:
      POSTGRES_USER: synapse
      POSTGRES_DB: synapse
      POSTGRES_PASSWORD: not-a-secret-test-only
      POSTGRES_INITDB_ARGS: "--encoding=UTF8 --lc-collate=C --lc-ctype=C"
    healthcheck:
      test: ["CMD-SHELL", "pg_isready -U synapse -d synapse"]
      interval: 1s
      timeout: 5s
      retries: 30
""")
    base = sshd.inputs(project_dir=str(project.dir), sudo=True, timeout=180)
    assert ctx.run(Up(), base).status == "changed"
    chk = ctx.check(Locale(), base)
    assert chk.in_sync is True
    assert chk.outputs == {"encoding": "UTF8", "collate": "C", "ctype": "C"}
    assert ctx.run(Locale(), base).status == "ok"
    # A database made with another locale: named, and apply refuses (no retry).
    r = project.compose("exec", "-T", "postgres", "psql", "-U", "synapse", "-d", "synapse",
                        "-c", "CREATE DATABASE wrong TEMPLATE template0 ENCODING 'SQL_ASCII' "
                              "LC_COLLATE 'C' LC_CTYPE 'C'")
    assert r.returncode == 0, r.stderr
    wrong = {**base, "database": "wrong"}
    chk = ctx.check(Locale(), wrong)
    assert chk.in_sync is False
    assert chk.changes == ["encoding is 'SQL_ASCII', Synapse needs 'UTF8'"]
    try:
        ctx.run(Locale(), wrong)
    except ActionFailed as e:
        assert not e.retry and "down -v" in (e.fix or "")
    else:
        raise AssertionError("a wrong locale must fail")


def test_checks_cannot_tell_before_the_stack_is_there(sshd: SshServer,
                                                      ctx: StandaloneContext) -> None:
    """plan before the upload: each check says it cannot compare yet (and why), never
    "in place" and never a traceback."""
    from elematrix_tui.actions.systemd import Install

    nowhere = sshd.inputs(project_dir="/nonexistent/elematrix", sudo=True)
    for action, extra in ((Up(), {}), (Locale(), {}),
                          (Exec(), {"service": "synapse", "command": "true",
                                    "creates": "/x"})):
        chk = ctx.check(action, {**nowhere, **extra})
        assert chk.in_sync is None and "cannot compare now" in chk.changes[0], chk
    units = sshd.inputs(source_dir="/nonexistent/systemd", dest_dir="/nonexistent/etc",
                        units=["elematrix-stack.service"])
    chk = ctx.check(Install(), units)
    assert chk.in_sync is None and "no unit file elematrix-stack.service" in chk.changes[0]


def test_a_failed_facts_read_never_quotes_its_output(sshd: SshServer,
                                                     ctx: StandaloneContext) -> None:
    """compose's resolved config carries the env_file's secrets: a failing read of the
    facts quotes stderr only."""
    from elematrix_tui.actions.compose import ComposeInputs
    from elematrix_tui.actions.hostfacts import host_run

    inputs = ComposeInputs.model_validate(sshd.inputs(project_dir="/tmp"))
    try:
        host_run(ctx, inputs, "echo POSTGRES_PASSWORD=hunter2; exit 3",
                 sudo=False, timeout=30, what="read", private_stdout=True)
    except ActionFailed as e:
        assert "hunter2" not in repr((e.message, e.diagnosis, e.fix))
        assert "(no output)" in (e.diagnosis or "")  # stderr was empty: stdout not shown
    else:
        raise AssertionError("exit 3 must fail")
