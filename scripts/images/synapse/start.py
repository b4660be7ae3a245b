#!/opt/synapse/bin/python
"""Entrypoint of the local matrixdotorg/synapse stand-in (our own code).

It keeps the behaviour of upstream's docker/start.py that a deployment can notice
(docs/test-images.md cites the lines):

- mode ``run`` (the default) never changes ownership of anything: a root-owned /data
  volume stays root-owned and Synapse, running as 991:991, fails on it;
- as root (or with UID/GID set) Synapse is exec'd through ``gosu UID:GID``;
- ``generate`` chowns the data directory (not recursively) before generating;
- jemalloc is preloaded when present; a missing config file exits 2 with a message.

Upstream's ``migrate_config`` (a config from environment variables, with /conf templates)
is not reproduced: it exits 2 saying so.
"""

import os
import platform
import subprocess
import sys
from typing import NoReturn

import jinja2


def log(txt: str) -> None:
    print(txt, flush=True)


def error(txt: str) -> NoReturn:
    print(txt, file=sys.stderr, flush=True)
    sys.exit(2)


def _ownership(environ: dict[str, str]) -> str | None:
    if "UID" in environ:
        return f"{int(environ['UID'])}:{int(environ.get('GID', '991'))}"
    if os.getuid() == 0:
        return "991:991"
    return None


def _generate(environ: dict[str, str], ownership: str | None) -> None:
    for name in ("SYNAPSE_SERVER_NAME", "SYNAPSE_REPORT_STATS"):
        if name not in environ:
            error(f"Environment variable '{name}' is mandatory in `generate` mode.")
    server_name = environ["SYNAPSE_SERVER_NAME"]
    config_dir = environ.get("SYNAPSE_CONFIG_DIR", "/data")
    config_path = environ.get("SYNAPSE_CONFIG_PATH", config_dir + "/homeserver.yaml")
    data_dir = environ.get("SYNAPSE_DATA_DIR", "/data")
    log_config = f"{config_dir}/{server_name}.log.config"
    if not os.path.exists(log_config):
        log(f"Creating log config {log_config}")
        with open("/conf/log.config") as src:
            text = jinja2.Template(src.read()).render(**environ)
        with open(log_config, "w") as dst:
            dst.write(text)
    args = [sys.executable, "-m", "synapse.app.homeserver", "--server-name", server_name,
            "--report-stats", environ["SYNAPSE_REPORT_STATS"], "--config-path", config_path,
            "--config-directory", config_dir, "--data-directory", data_dir,
            "--generate-config", "--open-private-ports"]
    if ownership is not None:
        log(f"Setting ownership on {data_dir} to {ownership}")
        subprocess.run(["chown", ownership, data_dir], check=True)
        args = ["gosu", ownership, *args]
    subprocess.run(args, check=True)


def main(argv: list[str], environ: dict[str, str]) -> None:
    mode = argv[1] if len(argv) > 1 else "run"
    ownership = _ownership(environ)
    if mode == "generate":
        _generate(environ, ownership)
        return
    if mode == "migrate_config":
        error("migrate_config is not reproduced by this local stand-in image "
              "(docs/test-images.md); use a static homeserver.yaml.")
    if mode != "run":
        error(f"Unknown execution mode '{mode}'")
    args = argv[2:]
    if "-m" not in args:
        args = ["-m", environ.get("SYNAPSE_WORKER", "synapse.app.homeserver"), *args]
    jemalloc = f"/usr/lib/{platform.machine()}-linux-gnu/libjemalloc.so.2"
    if os.path.isfile(jemalloc):
        environ["LD_PRELOAD"] = jemalloc
    else:
        log(f"Could not find {jemalloc}, will not use")
    if not any(a.startswith(("--config-path", "-c")) for a in args):
        config_dir = environ.get("SYNAPSE_CONFIG_DIR", "/data")
        config_path = environ.get("SYNAPSE_CONFIG_PATH", config_dir + "/homeserver.yaml")
        if not os.path.exists(config_path):
            error(f"Config file '{config_path}' does not exist. You should either create a "
                  "new config file by running with the `generate` argument (and then edit "
                  "the resulting file before restarting) or specify the path to an "
                  "existing config file with the SYNAPSE_CONFIG_PATH variable.")
        args += ["--config-path", config_path]
    log("Starting synapse with args " + " ".join(args))
    args = [sys.executable, *args]
    sys.stdout.flush()
    sys.stderr.flush()
    if ownership is not None:
        os.execve("/usr/sbin/gosu", ["gosu", ownership, *args], environ)
    os.execve(sys.executable, args, environ)


if __name__ == "__main__":
    main(sys.argv, dict(os.environ))
