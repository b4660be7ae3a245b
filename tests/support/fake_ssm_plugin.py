"""A stand-in for AWS's ``session-manager-plugin`` that forwards on this machine.

The real plugin (github.com/aws/session-manager-plugin) is started by the AWS CLI as
``session-manager-plugin RESPONSE REGION StartSession PROFILE REQUEST_JSON ENDPOINT``
(awscli/customizations/sessionmanager.py ``StartSessionCaller.invoke``), RESPONSE being
the start_session response JSON or, for plugins newer than 1.2.497.0, the name of the
environment variable holding it; ``--version`` prints the bare version. It then opens a
websocket to StreamUrl and, for ``AWS-StartPortForwardingSession``, listens on
127.0.0.1:localPortNumber, relaying each connection to localhost:portNumber ON THE
INSTANCE. Here this machine is the instance: connections go to 127.0.0.1:portNumber, or
to the port ``ELEMATRIX_FAKE_SSM_PORTS`` maps it to ("8008=41234,...": the instance's
8008 is the test Synapse's port; never another engineer's service on 127.0.0.1:8008).

At least as strict as the real one about its input: every argument is checked (exit 1
with a message like the plugin's otherwise), the response must carry SessionId,
TokenValue and a wss:// StreamUrl, the request must name the document and both ports.
No websocket (no AWS here): that part is the one thing it does not do.
"""

from __future__ import annotations

import json
import os
import select
import socket
import sys
import threading

VERSION = "1.2.650.0"


def fail(msg: str) -> None:
    print(msg, file=sys.stderr)
    sys.exit(1)


def relay(client: socket.socket, port: int) -> None:
    try:
        up = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError:
        client.close()
        return
    with client, up:
        while True:
            ready, _, _ = select.select([client, up], [], [], 60)
            if not ready:
                return
            for s in ready:
                data = s.recv(65536)
                if not data:
                    return
                (up if s is client else client).sendall(data)


def main(argv: list[str]) -> None:
    if argv[1:] == ["--version"]:
        print(VERSION)
        return
    if len(argv) != 7:
        fail(f"expected 6 arguments, got {len(argv) - 1}")
    raw, region, op, _profile, request_json, endpoint = argv[1:]
    if raw == "AWS_SSM_START_SESSION_RESPONSE":
        raw = os.environ.get(raw, "")
    response = json.loads(raw)
    request = json.loads(request_json)
    for k in ("SessionId", "TokenValue", "StreamUrl"):
        if not response.get(k):
            fail(f"start session response lacks {k}")
    if not str(response["StreamUrl"]).startswith("wss://"):
        fail("StreamUrl is not a wss:// URL")
    if op != "StartSession" or not region or not endpoint.startswith(("https://", "http://")):
        fail(f"bad invocation: {op!r} {region!r} {endpoint!r}")
    if request.get("DocumentName") != "AWS-StartPortForwardingSession":
        fail(f"document {request.get('DocumentName')!r} is not a port forward")
    if not str(request.get("Target", "")).startswith(("i-", "mi-")):
        fail("Target is not an instance id")
    params = request.get("Parameters") or {}
    try:
        remote = int(params["portNumber"][0])
        local = int(params["localPortNumber"][0])
    except (KeyError, IndexError, ValueError):
        fail("Parameters need portNumber and localPortNumber as lists of one string")
        return
    ports = dict(item.split("=", 1) for item in
                 os.environ.get("ELEMATRIX_FAKE_SSM_PORTS", "").split(",") if "=" in item)
    remote = int(ports.get(str(remote), remote))
    print(f"\nStarting session with SessionId: {response['SessionId']}", flush=True)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", local))
    srv.listen(64)
    print(f"Port {local} opened for sessionId {response['SessionId']}.", flush=True)
    print("Waiting for connections...", flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=relay, args=(conn, remote), daemon=True).start()


if __name__ == "__main__":
    main(sys.argv)
