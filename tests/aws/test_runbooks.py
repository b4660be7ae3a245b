"""The shipped AWS runbooks load, and keep the parameter names other parts rely on."""

from __future__ import annotations

from pathlib import Path

from elematrix_tui.actions import default_registry
from elematrix_tui.bundled import runbooks_dir
from elematrix_tui.engine.loader import load_runbook

RUNBOOKS = runbooks_dir()


def test_poc_ec2_params_and_phase_order() -> None:
    rb = load_runbook(RUNBOOKS / "poc-ec2.yaml", default_registry())
    types = {p.name: p.type for p in rb.params}
    assert types["operator_cidr"] == "cidr" and rb.param("operator_cidr").is_required
    assert rb.param("instance_type").choices == ["t3.medium", "t3.large"]
    assert rb.param("instance_type").default == "t3.medium"
    assert types["alert_email"] == "email"
    assert rb.param("server_name").permanent and rb.param("server_name").help
    assert types["expected_account"] == "string" and types["retarget_account"] == "bool"
    # Only what has no sensible default is required.
    assert [p.name for p in rb.params if p.is_required] == ["operator_cidr"]
    ids = [p.id for p in rb.phases]
    assert ids[0] == "infra" and ids[-1] == "harden"
    harden = rb.phase("harden")
    assert harden is not None
    close = next(s for s in harden.steps if s.id == "close_ssh")
    assert close.confirm and close.destructive
    steps = [s.id for s in harden.steps]
    assert steps.index("ssm_ready") < steps.index("close_ssh")
    # posture, and the root volume's snapshot schedule (snapshot_schedule on).
    assert [(g.id, g.action) for g in rb.phase("infra").gates] == [
        ("posture", "aws.assert"), ("snapshot_schedule", "aws.assert")]


def test_teardown_keeps_the_bucket_unless_confirmed() -> None:
    rb = load_runbook(RUNBOOKS / "teardown.yaml", default_registry())
    assert rb.param("confirm_deployment").default == ""
    delete = next(s for s in rb.phases[0].steps if s.id == "delete")
    assert delete.destructive and delete.confirm
    assert delete.with_["include_bucket"] == "{{ params.confirm_deployment == deployment }}"
    assert rb.phases[0].gates[0].expect == {"remaining": 0}


def test_the_elastic_ip_is_attached_as_soon_as_the_instance_runs() -> None:
    """Issue 12: associated after the status checks, the EIP changed the public address
    while user-data was still downloading (resetting those connections). It must come
    right after ``instance_running``, before anything waits on the booting instance."""
    rb = load_runbook(RUNBOOKS / "poc-ec2.yaml", default_registry())
    infra = rb.phase("infra")
    assert infra is not None
    steps = [s.id for s in infra.steps]
    assert steps.index("eip_association") == steps.index("instance_running") + 1
    assert steps.index("eip_association") < steps.index("address")
    # It starts the moment the instance runs (needs:, engine/schedule.py), and the status
    # checks no longer hold anything up in infra: they are a later check (harden).
    assert infra.steps[steps.index("eip_association")].needs == ["instance_running"]
    assert "instance_status_ok" not in steps
    harden = rb.phase("harden")
    assert harden is not None and "instance_status_ok" in [s.id for s in harden.steps]


def test_harden_switches_the_containers_to_cloudwatch_unless_logs_stay_local(
        tmp_path: Path) -> None:
    """Issue 12: nothing in harden ever made the containers log to CloudWatch. Now it
    re-renders with the log groups' prefix, uploads, recreates, and proves events arrive;
    container_logs=local (practice: the local engine has no AWS credentials) skips that."""
    from elematrix_tui.practice import practice_params

    rb = load_runbook(RUNBOOKS / "poc-ec2.yaml", default_registry())
    harden = rb.phase("harden")
    assert harden is not None
    steps = {s.id: s for s in harden.steps}
    order = [s.id for s in harden.steps]
    assert order.index("log_groups") < order.index("render_awslogs") < \
        order.index("upload_awslogs") < order.index("recreate_awslogs") < order.index("close_ssh")
    assert steps["render_awslogs"].with_["log_group_prefix"] == "{{ steps.log_groups.prefix }}"
    assert "names" not in steps["log_groups"].with_["spec"]  # the stack's own table
    gates = {g.id: g for g in harden.gates}
    assert gates["logs_flowing"].action == "aws.logs_flowing"
    # Only the bundled stack is re-rendered: an operator's own stack (stack_source) keeps
    # its logging (docs/stack.md).
    local = "{{ params.container_logs == 'cloudwatch' and params.stack_source == 'bundled' }}"
    for s in (steps["render_awslogs"], steps["upload_awslogs"], steps["recreate_awslogs"],
              gates["logs_flowing"]):
        assert s.when == local
    assert rb.param("container_logs").default == "cloudwatch"
    assert practice_params(tmp_path)["container_logs"] == "local"


def test_the_first_backup_waits_for_what_the_restore_proves() -> None:
    # Found by the restore rehearsal after `needs:` came in: first_backup needed only the
    # signing key, ran beside bootstrap, and the restored database had no admin to log in.
    from elematrix_tui.engine.schedule import dependencies

    rb = load_runbook(runbooks_dir() / "poc-ec2.yaml", default_registry())
    deploy = next(ph for ph in rb.phases if ph.id == "deploy")
    deps = dependencies(deploy)

    def before(step: str) -> set[str]:
        seen: set[str] = set()
        todo = list(deps[step])
        while todo:
            s = todo.pop()
            if s not in seen:
                seen.add(s)
                todo.extend(deps[s])
        return seen

    assert {"bootstrap", "canary", "signing_key"} <= before("first_backup")
