"""SSH connections for the ``ssh.*`` actions: targets, host key pinning, exec, files, forwards.

One :class:`SshConnection` per host per run (the actions borrow it through
``ctx.resource``). It opens the TCP socket itself with ``TCP_NODELAY`` (paramiko never
sets it: a command on a reused connection takes ~48 ms without it, ~4 ms with it), pins
the host key against the fingerprints the infra phase read from the console output (or
the ones the operator accepted once), and reconnects when the transport died between
two commands. Whether a command that was *running* when the connection dropped may be
re-run is the action's decision, not this module's.

``host: local`` gives a :class:`LocalConnection` with the same interface: commands run
with ``/bin/sh -c`` on this machine and files are copied. Runbooks can then be rehearsed
without any SSH server.

paramiko is imported lazily (inside functions): importing this module must stay cheap.

The package: ``target`` (targets, ``~/.ssh/config``), ``hostkeys`` (fingerprints, pins),
``base`` (the interface and results every connection shares), ``connection`` (SSH),
``local`` (``host: local``), ``step`` (a connection inside a step: pins, the operator's
question, the run resource), ``forward`` (port forwards). Every public name is
re-exported here, so ``from .sshconn import X`` works as it did when this was one file.
"""

from __future__ import annotations

from .base import (
    ENV_NAME_RE,
    OUTPUT_CAP,
    ChannelOpenError,
    Connection,
    ExecResult,
    LineSink,
    OutputTail,
    deadline_of,
)
from .connection import SshConnection
from .forward import Forwarder
from .hostkeys import (
    BEGIN_KEYS,
    BLOCK_RE,
    END_KEYS,
    FP_RE,
    INFRA_HOST_KEYS,
    HostKeyProblem,
    host_key_failure,
    key_algorithms,
    key_fingerprint,
    parse_fingerprints,
)
from .local import LocalConnection
from .step import connection, open_connection
from .target import DEFAULT_PORT, DEFAULT_USER, LOCAL, Target, resolve_target, ssh_config_path

__all__ = [
    "BEGIN_KEYS", "BLOCK_RE", "DEFAULT_PORT", "DEFAULT_USER", "END_KEYS", "ENV_NAME_RE", "FP_RE",
    "INFRA_HOST_KEYS",
    "LOCAL", "OUTPUT_CAP", "ChannelOpenError", "Connection", "ExecResult", "Forwarder",
    "HostKeyProblem", "LineSink", "LocalConnection", "OutputTail", "SshConnection", "Target",
    "connection", "deadline_of", "host_key_failure", "key_algorithms", "key_fingerprint",
    "open_connection", "parse_fingerprints", "resolve_target", "ssh_config_path",
]
