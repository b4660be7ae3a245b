"""The checks of the ``matrix.validate`` gate, against a live Synapse behind nginx.

Six checks, each reported as its own gate result with its timing:

1. ``discovery``: ``/_matrix/client/versions``, an encoded-URI probe, both well-known
   files and Element's ``config.json`` through the public address.
2. ``registration``: two throwaway users register with a fresh registration token
   (``m.login.registration_token`` then ``m.login.dummy``).
3. ``e2ee_roundtrip``: an encrypted room; a random nonce from A is received by B as a
   *decrypted* ``RoomMessageText``, then B answers A the same way.
4. ``encrypted_at_rest``: the events as stored by Synapse are ``m.room.encrypted``
   (``m.megolm.v1.aes-sha2``) and a third client with no keys cannot read them.
5. ``media``: an upload just under the limit round-trips identical; one just over it is
   refused (by Synapse's ``M_TOO_LARGE``, or by nginx at the same limit).
6. ``cleanup``: the throwaway users are deactivated, their devices, the room, the media
   and the registration token removed.

Failures carry a diagnosis in the operator's terms (:data:`DIAGNOSES`), not just a status.
Every network call has a timeout: httpx's, nio's ``request_timeout`` with
``max_timeouts=0`` (nio retries connection errors forever by default), and a budget per
check enforced with ``asyncio.wait_for``.

Imported only from inside ``matrix.validate``'s ``apply`` (httpx and nio load lazily).

The package: ``diagnoses`` (the causes as a typed table of records, the classifier),
``model`` (settings, outcomes, the checks' names), ``core`` (what the checks share),
one module per check (``discovery``, ``registration``, ``e2ee``: checks 3 and 4,
``media``, ``cleanup``) and ``gate`` (the driver). Every public name is re-exported here.
"""

from __future__ import annotations

from .core import GateCore
from .diagnoses import DIAGNOSES, Cause, CheckFailed, Diagnosis, classify, diagnosis
from .gate import Gate
from .model import (
    CHECK_NAMES,
    CHECKS,
    MEGOLM,
    MIB,
    PROBE_BYTES,
    UPLOAD_PATH,
    WELL_KNOWN_SERVER_RE,
    GateState,
    Outcome,
    Settings,
    element_e2ee_warning,
    norm_url,
    summary,
)

__all__ = [
    "CHECKS", "CHECK_NAMES", "DIAGNOSES", "MEGOLM", "MIB", "PROBE_BYTES", "UPLOAD_PATH",
    "WELL_KNOWN_SERVER_RE", "Cause", "CheckFailed", "Diagnosis", "Gate", "GateCore",
    "GateState", "Outcome", "Settings", "classify", "diagnosis", "element_e2ee_warning",
    "norm_url", "summary",
]
