#!/usr/bin/env bash
# Install everything the demo and the tests need on a fresh Debian 12 machine:
# Debian packages (PostgreSQL 15 server and client, zstd, ...), a Python
# virtual environment in .venv with the pinned Python dependencies, and the
# PostgreSQL 17 client tools of Debian 13 (scripts/pg-client-newer.sh, cached
# in /var/cache/doctorq/pg-client-17; DOCTORQ_WITH_PG_NEWER=0 leaves them out).
# Idempotent: a second run only checks.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

# prometheus: for promtool only (tests/unit/test_monitoring.py checks and tests monitoring/'s rules).
# debootstrap, patchelf: the PostgreSQL 17 client tools (scripts/pg-client-newer.sh) and the molecule image.
apt_pkgs=(postgresql postgresql-contrib zstd pigz python3-venv rsync pgbackrest openssl shellcheck faketime prometheus
  debootstrap patchelf)
[ "${DOCTORQ_WITH_CONTAINERS:-1}" = 1 ] && apt_pkgs+=(podman uidmap slirp4netns fuse-overlayfs)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The package starts the distribution's default cluster; the tests and the
  # demo never use it, so stop it to keep the machine quiet.
  if command -v pg_lsclusters >/dev/null; then
    pg_lsclusters -h 2>/dev/null | while read -r ver name _; do
      pg_ctlcluster "$ver" "$name" stop 2>/dev/null || true
    done
  fi
  # Likewise the Prometheus server the package starts: only its promtool is used.
  if command -v systemctl >/dev/null && systemctl is-enabled prometheus >/dev/null 2>&1; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi

[ "${DOCTORQ_WITH_PG_NEWER:-1}" = 1 ] && bash scripts/pg-client-newer.sh

py=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$py" -m venv .venv
fi
# The stamp covers meta/requirements.txt too (requirements-dev.txt includes it).
want=$(cat requirements-dev.txt meta/requirements.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv/.requirements-installed 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python requirements into .venv"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements-dev.txt
  echo "$want" >.venv/.requirements-installed
fi
echo "setup: ready ($(.venv/bin/python --version), ansible-core $(.venv/bin/python -c 'import ansible.release as r; print(r.__version__)'))"
