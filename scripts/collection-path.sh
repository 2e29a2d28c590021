#!/usr/bin/env bash
# Expose this checkout as the collection doctorq.backup for Ansible and Python:
#   .build/collections/ansible_collections/doctorq/backup -> the repo root
# Prints the folder to put in ANSIBLE_COLLECTIONS_PATH / PYTHONPATH.
# Idempotent; safe to run concurrently.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
base="$root/.build/collections"
link="$base/ansible_collections/doctorq/backup"
mkdir -p "$(dirname "$link")"
if [ "$(readlink -f "$link" 2>/dev/null || true)" != "$root" ]; then
  tmp="$link.$$.tmp"
  ln -sfn ../../../.. "$tmp"
  mv -Tf "$tmp" "$link"
fi
echo "$base"
