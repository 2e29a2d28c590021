#!/usr/bin/env bash
# On demand, not in CI: build the execution environment of
# ee/execution-environment.yml (ansible-builder, podman) from the collection's
# release tarball, then, inside it, check the tools the engine runs and run
# one backup, listing and restore (playbooks/demo.yml, the installed copy)
# against the test bed's PostgreSQL and SeaweedFS over the host network.
#
#   bash scripts/ee.sh                                   # its own test bed, stopped at the end
#   DOCTORQ_TESTBED_DIR=/tmp/bed bash scripts/ee.sh      # a running bed (left running)
#
# Knobs:
#   DOCTORQ_EE_BASE_IMAGE  base image (default: the local Debian image of
#                          scripts/build-image.sh, because no container
#                          registry is reachable here; "definition" = the
#                          definition's own, quay.io/centos/centos:stream9)
#   DOCTORQ_EE_REF         build the collection from this commit (git archive)
#                          instead of the tracked files as they are on disk
#   DOCTORQ_EE_TAG         image tag (default localhost/doctorq-backup-ee:latest)
#   DOCTORQ_EE_CA_BUNDLE   CA bundle mounted into the build for apt and pip
#                          behind a TLS-inspecting proxy (default: the host's
#                          /etc/ssl/certs/ca-certificates.crt; "" = none)
# Why not in CI: a cold build downloads ansible-core, boto3 and the packages
# (several minutes on 2 cores), and CI's budget is better spent on the
# artifact test (tests/integration/test_artifact.py) that runs the same
# installed tarball in seconds.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

log() { printf '[%(%Y-%m-%d %H:%M:%S)T] ee.sh: %s\n' -1 "$*"; }
die() { log "ERROR: $*" >&2; exit 1; }

[ -x .venv/bin/ansible-builder ] || die ".venv has no ansible-builder: run scripts/setup.sh (requirements-dev.txt lists it)"
command -v podman >/dev/null || die "podman is missing: run scripts/setup.sh"
tag=${DOCTORQ_EE_TAG:-localhost/doctorq-backup-ee:latest}
base=${DOCTORQ_EE_BASE_IMAGE:-localhost/doctorq-debian-bookworm:systemd}
ca=${DOCTORQ_EE_CA_BUNDLE-/etc/ssl/certs/ca-certificates.crt}
work=.build/ee
mkdir -p "$work"

# 1. The artifact, from the files git tracks (what a release holds), or from a commit.
log "building the collection tarball from git's files"
rm -rf "$work/src" "$work"/doctorq-backup*.tar.gz
mkdir -p "$work/src"
if [ -n "${DOCTORQ_EE_REF:-}" ]; then
  git archive "$DOCTORQ_EE_REF" | tar -xf - -C "$work/src"
else
  git ls-files -z | tar --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -xf - -C "$work/src"
fi
.venv/bin/ansible-galaxy collection build --force --output-path "$work" "$work/src" >/dev/null
cp "$work"/doctorq-backup-*.tar.gz "$work/doctorq-backup.tar.gz"

# 2. The image.
definition=ee/execution-environment.yml
if [ "$base" = local ] || [ "$base" = localhost/doctorq-debian-bookworm:systemd ]; then
  scripts/build-image.sh
  base=localhost/doctorq-debian-bookworm:systemd
fi
if [ "$base" != definition ]; then
  # The same definition on another base; on a Debian one, apt instead of dnf, Debian's
  # python3 and pip (its ensurepip is disabled), no PGDG/EPEL (bindep's [platform:dpkg] names).
  definition=$work/execution-environment.yml
  .venv/bin/python - ee/execution-environment.yml "$definition" "$base" "$root/$work/doctorq-backup.tar.gz" <<'PY'
import subprocess
import sys

import yaml

src, dst, base, tarball = sys.argv[1:]
with open(src, encoding="utf-8") as handle:
    ee = yaml.safe_load(handle)
ee["images"]["base_image"]["name"] = base
ee["additional_build_files"] = [{"src": tarball, "dest": "collection"}]
probe = ["podman", "run", "--rm", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768", base,
         "test", "-x", "/usr/bin/apt-get"]
if subprocess.run(probe, check=False).returncode == 0:
    ee["dependencies"]["python_interpreter"] = {"package_system": "python3", "python_path": "/usr/bin/python3"}
    ee.setdefault("options", {}).update(package_manager_path="/usr/bin/apt-get", skip_pip_install=True)
    ee["additional_build_steps"]["prepend_base"] = [
        "RUN apt-get update && apt-get install -y --no-install-recommends python3-pip python3-venv"]
with open(dst, "w", encoding="utf-8") as handle:
    yaml.safe_dump(ee, handle, sort_keys=False)
PY
fi
build_args=(--container-runtime podman -f "$definition" -c "$work/context" -t "$tag" -v 2)
extra="--network host --ulimit nofile=20000:20000 --ulimit nproc=32768:32768"
if [ -n "$ca" ] && [ -f "$ca" ]; then
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$work/pip.conf"
  extra+=" -v $(readlink -f "$ca"):/etc/ssl/certs/ca-certificates.crt:ro -v $root/$work/pip.conf:/etc/pip.conf:ro"
fi
build_args+=(--extra-build-cli-args "$extra")
log "ansible-builder build (base $base, tag $tag)"
start=$SECONDS
.venv/bin/ansible-builder build "${build_args[@]}"
log "built $tag in $((SECONDS - start)) s"

# 3. The test bed.
bed=${DOCTORQ_TESTBED_DIR:-}
if [ -z "$bed" ]; then
  bed=$root/$work/bed
  .venv/bin/python scripts/testbed.py up --dir "$bed" --only pg --only seaweed >/dev/null
  trap '.venv/bin/python scripts/testbed.py down --dir "$bed" >/dev/null 2>&1 || true' EXIT
fi
# shellcheck disable=SC1091
source "$bed/testbed.env"
export PGHOST PGPORT PGUSER PGPASSWORD DOCTORQ_SEAWEED_ENDPOINT DOCTORQ_SEAWEED_ACCESS_KEY DOCTORQ_SEAWEED_SECRET_KEY
export DEMO_DB=ee_demo_$$ DEMO_BUCKET=ee-demo-$$ DEMO_DIR=/tmp/ee-demo
bucket() {  # create or delete (with every object) the demo's bucket
  .venv/bin/python - "$1" "$DEMO_BUCKET" <<'PY'
import os, sys
import boto3
action, name = sys.argv[1:]
s3 = boto3.resource("s3", endpoint_url=os.environ["DOCTORQ_SEAWEED_ENDPOINT"], region_name="us-east-1",
                    aws_access_key_id=os.environ["DOCTORQ_SEAWEED_ACCESS_KEY"],
                    aws_secret_access_key=os.environ["DOCTORQ_SEAWEED_SECRET_KEY"])
if action == "create":
    s3.create_bucket(Bucket=name)
else:
    s3.Bucket(name).objects.all().delete()
    s3.Bucket(name).delete()
PY
}
cleanup_bed() {
  "$DOCTORQ_PG_BIN_DIR/dropdb" --if-exists "$DEMO_DB" || true
  "$DOCTORQ_PG_BIN_DIR/dropdb" --if-exists "${DEMO_DB}_restored" || true
  bucket delete || true
}
trap 'cleanup_bed; [ -n "${DOCTORQ_TESTBED_DIR:-}" ] || .venv/bin/python scripts/testbed.py down --dir "$bed" >/dev/null 2>&1 || true' EXIT
"$DOCTORQ_PG_BIN_DIR/createdb" "$DEMO_DB"
"$DOCTORQ_PG_BIN_DIR/psql" -q -X -d "$DEMO_DB" -v ON_ERROR_STOP=1 \
  -c "CREATE TABLE patients AS SELECT g AS id, 'Paciente ' || g || ' São João' AS name FROM generate_series(1, 5000) g"
bucket create

# 4. Inside the EE: tools, both commands, every module's doc, the demo.
# Secrets reach the container through the environment (-e NAME), never argv.
run=(podman run --rm --network host --ulimit nofile=20000:20000 --ulimit nproc=32768:32768
     -e PGHOST -e PGPORT -e PGUSER -e PGPASSWORD -e DOCTORQ_SEAWEED_ENDPOINT -e DOCTORQ_SEAWEED_ACCESS_KEY
     -e DOCTORQ_SEAWEED_SECRET_KEY -e DEMO_DB -e DEMO_BUCKET -e DEMO_DIR -e ANSIBLE_NOCOLOR=1)
server_major=$("$DOCTORQ_PG_BIN_DIR/psql" -XAtq -c "SHOW server_version_num" | awk '{print int($1 / 10000)}')
log "inside the EE: tools (the server is PostgreSQL $server_major)"
# shellcheck disable=SC2016  # expanded inside the container
"${run[@]}" -e SERVER_MAJOR="$server_major" "$tag" bash -ec '
  for tool in pg_dump pg_restore pg_dumpall psql zstd pigz gzip tar setpriv pgbackrest; do
    printf "%-11s %s\n" "$tool" "$(command -v "$tool")"
  done
  pg_dump --version; pgbackrest version; tar --version | head -1
  major=$(pg_dump --version | sed -E "s/.* ([0-9]+)[.].*/\1/")
  [ "$major" -ge "$SERVER_MAJOR" ] || { echo "pg_dump $major is older than the server ($SERVER_MAJOR)" >&2; exit 1; }
  py=$(head -1 "$(command -v ansible-playbook)" | sed "s/^#!//")
  cd /usr/share/ansible/collections
  "$py" -m ansible_collections.doctorq.backup.cli.backup --help >/dev/null
  "$py" -m ansible_collections.doctorq.backup.cli.pgbackrest --help >/dev/null
  echo "both commands start (doctorq-backup, doctorq-pgbackrest)"
  for m in ansible_collections/doctorq/backup/plugins/modules/*.py; do
    ansible-doc "doctorq.backup.$(basename "$m" .py)" >/dev/null
  done
  echo "ansible-doc renders every module"'
log "inside the EE: playbooks/demo.yml (backup to disk and S3, list and verify, restore) as doctorq.backup.demo"
"${run[@]}" "$tag" ansible-playbook -i localhost, -c local -e 'ansible_python_interpreter={{ ansible_playbook_python }}' \
  doctorq.backup.demo
want=$("$DOCTORQ_PG_BIN_DIR/psql" -XAtq -d "$DEMO_DB" -c "SELECT count(*), md5(string_agg(name, ',' ORDER BY id)) FROM patients")
got=$("$DOCTORQ_PG_BIN_DIR/psql" -XAtq -d "${DEMO_DB}_restored" -c "SELECT count(*), md5(string_agg(name, ',' ORDER BY id)) FROM patients")
[ "$want" = "$got" ] || die "the restored database differs: $want vs $got"
log "ok: $tag backs up and restores ($got)"
