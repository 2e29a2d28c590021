#!/usr/bin/env bash
# Run the molecule scenarios (podman driver) on this machine.
#
#   scripts/molecule.sh                 # molecule test, every scenario under molecule/
#   scripts/molecule.sh default         # only these scenarios
#   DOCTORQ_MOLECULE_COMMAND=converge scripts/molecule.sh default   # another molecule command
#
# It prepares what molecule needs and nothing more, idempotently:
# - the base image (scripts/build-image.sh: debootstrap + podman import, cached)
#   and a cache of the .deb files the containers download (.build/cache/apt-archives);
# - the containers.podman collection, which the driver needs: Galaxy is not
#   reachable, so it is copied out of the `ansible` PyPI wheel (downloaded once
#   into .build/cache, never installed into .venv);
# - this collection exposed as .build/collections/ansible_collections/doctorq/backup;
# - a wheelhouse of the host-side Python packages (the client role's list), so
#   the scenario installs them the way a host without index access does;
# - the collection artifact the scenarios install on their hosts (a snapshot);
# - an S3 server on 127.0.0.1 (SeaweedFS from scripts/testbed.py, unless
#   DOCTORQ_SEAWEED_ENDPOINT/_ACCESS_KEY/_SECRET_KEY name one) and a bucket.
# Exits non-zero when any scenario fails.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

log() { printf '[%(%Y-%m-%d %H:%M:%S)T] molecule.sh: %s\n' -1 "$*"; }
die() { log "ERROR: $*" >&2; exit 1; }

[ -x .venv/bin/molecule ] || die ".venv has no molecule: run scripts/setup.sh first"
export PATH="$here/.venv/bin:$PATH"
py=$here/.venv/bin/python

# 1. Base image (and the podman host fix), and the cache of .deb files the
#    scenarios' containers share (mounted on /var/cache/apt/archives).
scripts/build-image.sh
mkdir -p .build/cache/apt-archives/partial

# 2. containers.podman out of the ansible wheel, matching this ansible-core
#    (ansible 12.x bundles the collections tested with ansible-core 2.19).
ansible_spec=${DOCTORQ_ANSIBLE_WHEEL_SPEC:-ansible>=12,<13}
cache=.build/cache
driver_collections=.build/molecule/collections
mkdir -p "$cache/ansible-wheel" "$driver_collections"
wheel=$(find "$cache/ansible-wheel" -name 'ansible-*.whl' | sort -V | tail -n1)
if [ -z "$wheel" ]; then
  log "downloading the $ansible_spec wheel (source of containers.podman) into $cache/ansible-wheel"
  "$py" -m pip download -q --no-deps --only-binary=:all: -d "$cache/ansible-wheel" "$ansible_spec"
  wheel=$(find "$cache/ansible-wheel" -name 'ansible-*.whl' | sort -V | tail -n1)
fi
stamp=$driver_collections/.from-wheel
if [ "$(cat "$stamp" 2>/dev/null)" != "$(basename "$wheel")" ]; then
  log "extracting containers.podman from $(basename "$wheel")"
  rm -rf "$driver_collections/ansible_collections"
  "$py" - "$wheel" "$driver_collections" <<'PY'
import sys, zipfile
wheel, dest = sys.argv[1:]
prefix = "ansible_collections/containers/podman/"
with zipfile.ZipFile(wheel) as zf:
    members = [n for n in zf.namelist() if n.startswith(prefix)]
    if not members:
        sys.exit(f"{wheel} holds no {prefix}")
    zf.extractall(dest, members)
PY
  basename "$wheel" >"$stamp"
fi

# 3. This collection on the collections path (the layout the lint and test
#    scripts use).
if [ -x scripts/collection-path.sh ]; then
  scripts/collection-path.sh >/dev/null
else
  link=.build/collections/ansible_collections/doctorq/backup
  [ -e "$link" ] || { mkdir -p "$(dirname "$link")"; ln -sfn ../../../.. "$link"; }
fi
[ -f .build/collections/ansible_collections/doctorq/backup/galaxy.yml ] \
  || die ".build/collections/ansible_collections/doctorq/backup does not lead to the collection root"
export ANSIBLE_COLLECTIONS_PATH="$here/.build/collections:$here/$driver_collections${ANSIBLE_COLLECTIONS_PATH:+:$ANSIBLE_COLLECTIONS_PATH}"

# 4. Wheelhouse for the client role's offline install path. The package list
#    is read from the role's defaults, so there is one list.
wheelhouse=.build/wheelhouse
pkgs=$("$py" -c 'import sys, yaml; print("\n".join(yaml.safe_load(open(sys.argv[1]))["client_python_packages"]))' \
  roles/client/defaults/main.yml)
want=$(printf '%s\n' "$pkgs" | sha256sum | cut -c1-16)
if [ "$(cat "$wheelhouse/.requirements" 2>/dev/null)" != "$want" ]; then
  log "building the wheelhouse in $wheelhouse for: $(echo "$pkgs" | tr '\n' ' ')"
  rm -rf "$wheelhouse" && mkdir -p "$wheelhouse"
  mapfile -t pkg_array <<<"$pkgs"
  "$py" -m pip download -q --only-binary=:all: -d "$wheelhouse" "${pkg_array[@]}"
  echo "$want" >"$wheelhouse/.requirements"
fi
export DOCTORQ_MOLECULE_WHEELHOUSE="$here/$wheelhouse"
command=${DOCTORQ_MOLECULE_COMMAND:-test}

# 5. The collection artifact the scenarios install on their hosts, built
#    once by the client role's own helper: every step of a scenario (check,
#    converge, idempotence) sees the same snapshot of plugins/, even while the
#    working tree changes. `test` runs get their own (removed on exit), so
#    concurrent runs of different scenarios do not swap it under each other;
#    a converge/idempotence/verify loop by hand shares one, made afresh by
#    every command but `idempotence` (which must see what converge installed).
mkdir -p .build/molecule
cleanup=()
run_cleanup() {
  local c
  for c in "${cleanup[@]}"; do eval "$c"; done
}
trap run_cleanup EXIT
if [ "$command" = test ]; then
  artifact_dir=$(mktemp -d "$here/.build/molecule/collection.XXXXXX")
  cleanup+=("rm -rf '$artifact_dir'")
else
  artifact_dir=$here/.build/molecule/collection
fi
if [ "$command" != idempotence ] || [ ! -s "$artifact_dir/artifact.json" ]; then
  rm -rf "$artifact_dir" && mkdir -p "$artifact_dir"
  "$py" roles/client/files/collection_artifact.py --out "$artifact_dir" --root "$here" >"$artifact_dir/artifact.json"
fi
DOCTORQ_MOLECULE_COLLECTION_ARTIFACT=$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["artifact"])' "$artifact_dir/artifact.json")
export DOCTORQ_MOLECULE_COLLECTION_ARTIFACT

# 6. An S3 server the containers reach on the host's 127.0.0.1 (they share
#    its network): the one named by DOCTORQ_SEAWEED_* (e.g. the test script's
#    bed), else a SeaweedFS of this run's own, stopped on exit.
if [ -z "${DOCTORQ_SEAWEED_ENDPOINT:-}" ]; then
  bed=$(mktemp -d "$here/.build/molecule/testbed.XXXXXX")
  log "starting SeaweedFS for the scenarios (scripts/testbed.py up --dir $bed --only seaweed)"
  cleanup+=("'$py' scripts/testbed.py down --dir '$bed' >/dev/null 2>&1 || true; rm -rf '$bed'")
  "$py" scripts/testbed.py up --dir "$bed" --only seaweed >/dev/null
  # shellcheck disable=SC1091
  . "$bed/testbed.env"
fi
export DOCTORQ_SEAWEED_ENDPOINT DOCTORQ_SEAWEED_ACCESS_KEY DOCTORQ_SEAWEED_SECRET_KEY
export DOCTORQ_MOLECULE_BUCKET=${DOCTORQ_MOLECULE_BUCKET:-doctorq-molecule}
"$py" - <<'PY'
import os
import boto3
s3 = boto3.client("s3", endpoint_url=os.environ["DOCTORQ_SEAWEED_ENDPOINT"], region_name="us-east-1",
                  aws_access_key_id=os.environ["DOCTORQ_SEAWEED_ACCESS_KEY"],
                  aws_secret_access_key=os.environ["DOCTORQ_SEAWEED_SECRET_KEY"])
bucket = os.environ["DOCTORQ_MOLECULE_BUCKET"]
if bucket not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
    s3.create_bucket(Bucket=bucket)
PY

# 7. The scenarios.
if [ $# -gt 0 ]; then
  scenarios=("$@")
else
  mapfile -t scenarios < <(find molecule -mindepth 2 -maxdepth 2 -name molecule.yml -printf '%h\n' | xargs -rn1 basename | sort)
fi
[ ${#scenarios[@]} -gt 0 ] || die "no scenario under molecule/"

failed=()
summary=()
for s in "${scenarios[@]}"; do
  [ -f "molecule/$s/molecule.yml" ] || die "no scenario molecule/$s"
  log "molecule $command -s $s"
  started=$SECONDS
  if molecule "$command" -s "$s"; then
    summary+=("$s: ok in $((SECONDS - started)) s")
  else
    failed+=("$s")
    summary+=("$s: FAILED after $((SECONDS - started)) s")
  fi
done
for line in "${summary[@]}"; do log "$line"; done
[ ${#failed[@]} -eq 0 ] || die "failed scenarios: ${failed[*]}"
