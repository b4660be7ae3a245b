"""Every built-in action, by name. Modules are imported only when a runbook uses them."""

from __future__ import annotations

from ..engine.registry import Registry

BUILTIN: dict[str, str] = {
    "local.noop": "elematrix_tui.actions.local:Noop",
    "local.sleep": "elematrix_tui.actions.local:Sleep",
    "local.write": "elematrix_tui.actions.local:WriteFile",
    "local.fail": "elematrix_tui.actions.local:Fail",
    "approve": "elematrix_tui.actions.approve:Approve",
    "aws.call": "elematrix_tui.actions.aws:Call",
    "aws.ensure": "elematrix_tui.actions.aws:Ensure",
    "aws.wait": "elematrix_tui.actions.aws:Wait",
    "aws.assert": "elematrix_tui.actions.aws:Assert",
    "aws.preflight": "elematrix_tui.actions.aws:Preflight",
    "aws.teardown": "elematrix_tui.actions.aws:Teardown",
    "aws.production_preflight": "elematrix_tui.actions.aws_production:ProductionPreflight",
    "dns.await_records": "elematrix_tui.actions.aws_production:AwaitRecords",
    "postgres.create_database": "elematrix_tui.actions.postgres_create:CreateDatabase",
    "aws.logs_flowing": "elematrix_tui.actions.aws_logs:LogsFlowing",
    "ssh.run": "elematrix_tui.actions.ssh:Run",
    "ssh.upload": "elematrix_tui.actions.ssh_upload:Upload",
    "ssh.forward": "elematrix_tui.actions.ssh:Forward",
    "ssm.forward": "elematrix_tui.actions.matrix_ssm:SsmForward",
    "compose.up": "elematrix_tui.actions.compose:Up",
    "compose.exec": "elematrix_tui.actions.compose:Exec",
    "systemd.install": "elematrix_tui.actions.systemd:Install",
    "postgres.locale": "elematrix_tui.actions.postgres_host:Locale",
    "aws.ssm_run": "elematrix_tui.actions.aws_ssm:SsmRun",
    "http.check": "elematrix_tui.actions.http:HttpCheck",
    "matrix.bootstrap": "elematrix_tui.actions.matrix:Bootstrap",
    "matrix.validate": "elematrix_tui.actions.matrix:Validate",
    "stack.render": "elematrix_tui.actions.stack:Render",
    "stack.doctor": "elematrix_tui.actions.stack:Doctor",
    "stack.adapt": "elematrix_tui.actions.stack_adapt:Adapt",
    "deploy.server_name": "elematrix_tui.actions.deploy:ServerName",
    "deploy.recorded": "elematrix_tui.actions.restore:Recorded",
    "restore.pick": "elematrix_tui.actions.restore:Pick",
    "restore.copy_backup": "elematrix_tui.actions.backup_copy:CopyBackup",
    "matrix.admin_login": "elematrix_tui.actions.restore:AdminLogin",
    "stack.render_workers": "elematrix_tui.actions.stack_workers:RenderWorkers",
    "matrix.routes": "elematrix_tui.actions.matrix_routes:Routes",
    "matrix.federation": "elematrix_tui.actions.matrix_federation:Federation",
    "browser.secure_context": "elematrix_tui.actions.browser:SecureContext",
    "matrix.canary": "elematrix_tui.actions.canary:Canary",
    "matrix.canary_check": "elematrix_tui.actions.canary:CanaryCheck",
    "status.host": "elematrix_tui.actions.host_status:HostStatus",
    "upgrade.pins": "elematrix_tui.actions.upgrade:Pins",
    "upgrade.schema": "elematrix_tui.actions.upgrade:Schema",
    "upgrade.render": "elematrix_tui.actions.upgrade:Rerender",
    "upgrade.rollback": "elematrix_tui.actions.upgrade:Rollback",
}


def default_registry() -> Registry:
    """A registry holding every built-in action."""
    return Registry(BUILTIN)
