"""``elematrix audit``: the deployment's posture by Prowler (or the gates' native checks),
judged against the runbook's ``posture:`` section. model: findings and the report (no I/O);
prowler: locate, run and read Prowler; run: the audit itself."""
