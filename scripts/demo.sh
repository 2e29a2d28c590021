#!/usr/bin/env bash
# The demo: on a fresh Debian 12 machine, install what is needed, start a
# local PostgreSQL 15 cluster and a local S3 server (SeaweedFS) on
# 127.0.0.1, load a sample database, and run the main job through Ansible:
# a verified backup to disk and S3, the listing of what was made, and a
# restore of it into a new database, verified table by table.
# Everything it starts is stopped at the end; nothing outside .build/ is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
DOCTORQ_WITH_CONTAINERS=0 bash scripts/setup.sh
bash scripts/collection-path.sh >/dev/null

bed=$PWD/.build/demo
if [ -f "$bed/testbed.json" ]; then .venv/bin/python scripts/testbed.py down --dir "$bed" || true; fi
rm -rf "$bed/backups"
echo "demo: starting PostgreSQL 15 and SeaweedFS on 127.0.0.1"
.venv/bin/python scripts/testbed.py up --dir "$bed" --only pg --only seaweed >/dev/null
trap '.venv/bin/python scripts/testbed.py down --dir "$bed" >/dev/null 2>&1 || true' EXIT
# shellcheck disable=SC1091
source "$bed/testbed.env"

echo "demo: loading the sample database 'doctorq' (pgbench scale 5 plus a table with jsonb and text)"
"$DOCTORQ_PG_BIN_DIR/createdb" doctorq
"$DOCTORQ_PG_BIN_DIR/pgbench" -i -s 5 -q doctorq >/dev/null 2>&1
"$DOCTORQ_PG_BIN_DIR/psql" -q -X -d doctorq -v ON_ERROR_STOP=1 <<'SQL'
CREATE TABLE IF NOT EXISTS patients (id serial PRIMARY KEY, name text NOT NULL, data jsonb, created timestamptz DEFAULT now());
INSERT INTO patients (name, data) SELECT 'Paciente ' || g || ' São João', jsonb_build_object('visits', g % 7, 'tags', jsonb_build_array('a', 'b'))
FROM generate_series(1, 20000) g;
ANALYZE;
SQL

export ANSIBLE_COLLECTIONS_PATH=$PWD/.build/collections ANSIBLE_STDOUT_CALLBACK=default ANSIBLE_NOCOLOR=1
export ANSIBLE_LOCALHOST_WARNING=false ANSIBLE_INVENTORY_UNPARSED_WARNING=false
export DEMO_DIR=$bed
.venv/bin/python - <<'PY'
import os, boto3
boto3.client("s3", endpoint_url=os.environ["DOCTORQ_SEAWEED_ENDPOINT"], region_name="us-east-1",
             aws_access_key_id=os.environ["DOCTORQ_SEAWEED_ACCESS_KEY"],
             aws_secret_access_key=os.environ["DOCTORQ_SEAWEED_SECRET_KEY"]).create_bucket(Bucket="doctorq-backups")
PY
.venv/bin/ansible-playbook -i localhost, -c local -e ansible_python_interpreter="$PWD/.venv/bin/python" playbooks/demo.yml
echo
echo "demo: what is on disk in $bed/backups:"
ls -l "$bed/backups" "$bed/backups/weekly"
echo "demo: md5sum -c and sha256sum -c of the checksum files written beside the backup:"
(cd "$bed/backups" && md5sum -c ./*.md5 && sha256sum -c ./*.sha256)
echo "demo: done; the servers are stopped on exit."
