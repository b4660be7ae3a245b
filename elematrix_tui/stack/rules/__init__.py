"""Doctor rules, grouped by the file they mostly look at. Each ``check(stack)`` returns findings.

Rule ids are stable (docs/doctor.md lists them): never renumber, only add.
"""

from __future__ import annotations

from collections.abc import Callable

from ..findings import Finding
from ..model import Stack
from . import compose_rules, nginx_rules, proxy_rules, synapse_rules

RuleCheck = Callable[[Stack], list[Finding]]

CHECKS: tuple[RuleCheck, ...] = (nginx_rules.check, compose_rules.check, synapse_rules.check,
                                 proxy_rules.check)

# id: (severity, short title) -- the catalogue printed by docs and `--format json`.
RULES: dict[str, tuple[str, str]] = {
    "EM000": ("error", "a stack file cannot be parsed"),
    "EM001": ("error", "redirect to https on an HTTP-only host"),
    "EM002": ("error", "TLS directives in nginx"),
    "EM003": ("warning", "certbot service or certificate mounts in compose"),
    "EM004": ("error", "HSTS header sent over HTTP"),
    "EM005": ("error", "proxy_pass with a URI path under the Matrix locations"),
    "EM006": ("error", "PostgreSQL not initialised with UTF8 and C collation"),
    "EM007": ("error", "registration tokens required but registration disabled"),
    "EM008": ("error", "public_baseurl and Element's base_url disagree (or use https)"),
    "EM009": ("error", "server_name is an EC2 host name"),
    "EM010": ("error", "placeholder or default secret"),
    "EM011": ("error", "signing key not on a persisted volume"),
    "EM012": ("error", "PostgreSQL or Synapse port published"),
    "EM013": ("error", "/_synapse/admin proxied publicly"),
    "EM014": ("error", "client_max_body_size missing or below max_upload_size"),
    "EM015": ("warning", "a process starts before what it dies without"),
    "EM016": ("warning", "media store not on a persisted volume"),
    "EM017": ("error", "database password differs between Synapse and PostgreSQL"),
    "EM018": ("warning", "Synapse listener behind nginx without x_forwarded"),
    "EM019": ("warning", "the stack is built for TLS; the target is HTTP-only (advisory)"),
    "EM020": ("error", "nginx directive in a context nginx refuses"),
    "EM021": ("error", "nginx upstream host that nothing in the compose project provides"),
    "EM022": ("error", "nginx upstream address the nginx container cannot reach"),
    "EM023": ("error", "compose service refers to an undeclared network or volume"),
    "EM024": ("warning", "external network or volume must exist before the stack starts"),
    "EM025": ("error", "proxy_pass through a variable without a resolver"),
}
