#!/usr/bin/env bash
# Set up this checkout on a fresh Debian 12 machine (as root, or with sudo).
#
#   scripts/setup.sh          runtime: a virtualenv with elematrix-tui in .venv
#   scripts/setup.sh --test   also what the test suite and benchmarks use: nginx, OpenSSH
#                             sshd, PostgreSQL 15, tmux, libpq, Synapse (its own venv),
#                             cloud-init's schema validator, the aws CLI (bench only)
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
  # Services the fixtures start natively on loopback (no Docker engine here).
  apt_install nginx-light openssh-server openssh-client sudo postgresql libpq-dev gcc python3-dev \
    tmux systemd ca-certificates curl wget util-linux
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
  # The aws CLI, only for the benchmark that compares against it.
  if [ ! -x .tools/awscli/bin/aws ]; then
    echo "setup: installing the aws CLI into .tools/awscli (benchmarks only)"
    $PY -m venv .tools/awscli
    .tools/awscli/bin/pip install -q awscli
  fi
fi
echo "setup: done ($ROOT)"
