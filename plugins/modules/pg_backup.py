#!/usr/bin/python
# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_backup
short_description: Verified streaming backup of a PostgreSQL database to disk and S3
version_added: 0.1.0
description:
  - Takes a full logical backup of one database with C(pg_dump) (custom format, restorable with stock C(pg_restore)),
    compresses it, hashes it (SHA-256 and MD5) and writes it to the backup directory and to S3 in one streaming pass.
  - Writes C(<file>.md5) and C(<file>.sha256) beside the backup (C(md5sum -c) and C(sha256sum -c) accept them) and a JSON
    manifest last. A backup without a manifest is incomplete; it is never listed, restored or counted by retention, and
    the next run removes it.
  - On the configured weekday the backup is also kept as a weekly copy (a hard link on disk, a server-side copy in S3).
  - Applies retention to daily and weekly backups on disk and in S3; never deletes the newest O(retention_min_count)
    backups of a kind, nor anything without a valid manifest written by this collection, nor anything outside
    O(backup_dir) or the S3 prefix. A manifest that does not hold together (a file name leading elsewhere, names that
    do not match) is reported as a warning and ignored. Nothing is deleted while a backup is dated after the clock.
  - S3 never costs the night's backup. When S3 is unreachable, refuses the credentials, has no such bucket, or fails
    mid-upload, the run still completes the local backup (checksum files, manifest, weekly link, local retention),
    skips the rest of its S3 work, and then fails with a message naming the S3 problem and the local file; the webhook
    carries the same facts. The next run that reaches S3 also uploads the complete local backups that never reached S3
    (RV(caught_up)), even when S3 holds no earlier backup. In check mode an S3 access failure fails the check.
  - In S3, an object uploaded in one PUT carries its SHA-256 as S3's checksum and as C(x-amz-meta-sha256); a multipart
    one carries a whole-object CRC32 (C(ChecksumType=FULL_OBJECT)) that S3 verifies, and its SHA-256 is in the
    C(.sha256) object and the manifest beside it (RV(backup.s3_checksum)). Servers that do not confirm FULL_OBJECT
    get SHA-256 per part and the composite checksum.
  - Two runs for the same database never overlap; the second fails at once naming the holder of the lock.
  - A database that a killed C(mode=replace) restore of M(doctorq.backup.pg_restore_safe) left dropped or half restored
    is not backed up (that backup would become the newest one); the run fails with the restore command that brings
    back its safety backup.
  - Writes a timestamped run log in the backup directory, notifies a webhook (Slack or generic JSON) and can write a
    Prometheus textfile for node_exporter.
  - The scheduled job on the host (C(doctorq-backup backup)) runs the same code; see the README.
  - Physical backups of a whole cluster with pgBackRest are M(doctorq.backup.pgbackrest_backup). Until 1.0.0 the
    module's action plugin still hands a task with the old C(kind=physical_full|differential|incremental) to it, with
    a deprecation warning; the old C(kind=logical), C(stanza), C(pgbackrest_config) and C(pgbackrest_user) are
    ignored otherwise.
extends_documentation_fragment:
  - doctorq.backup.common
  - doctorq.backup.postgres
  - doctorq.backup.s3
  - doctorq.backup.policy
  - doctorq.backup.notify
attributes:
  check_mode:
    description: Checks access to PostgreSQL, the client programs and the bucket, and reports what would be written and deleted.
options:
  db:
    description: Database to back up.
    required: true
  backup_dir:
    description:
      - Local directory of the backups; weekly copies go to its C(weekly/) subdirectory. Created (0700) if missing.
      - Backup files and their checksum files and manifests are created with mode 0600.
    type: path
    default: /var/backups/postgresql
  globals:
    description:
      - Also dump the cluster's globals (roles, tablespaces) with C(pg_dumpall --globals-only), needed to restore on a
        new server. Needs a superuser.
    type: bool
    default: false
  jobs:
    description:
      - V(1) (the default) streams one custom-format archive, best for small databases.
      - Any other value makes a directory backup with pg_dump's directory format and that many parallel jobs
        (C(pg_dump -Fd -j N)), V(0) one job per core; stock C(pg_restore -j N) restores it in parallel. The backup is
        the directory C(<db>_full_<YYYYmmdd_HHMMSS>.dir) beside its C(.dir.sha256) and C(.dir.md5) files (one line per
        file; C(sha256sum -c) in O(backup_dir) checks the whole directory) and its manifest; in S3 one object per file
        under C(<name>.dir/), each uploaded while pg_dump writes it.
      - pg_dump compresses each file itself, with O(compression) V(zstd), V(gzip) at O(compression_level), or V(none).
        V(zstd) needs the PostgreSQL 16 client tools or newer (given with older ones, the run fails before any work);
        O(compression) not given is V(zstd) with them and V(gzip) with older ones.
    type: int
    default: 1
  lock_wait_timeout:
    description:
      - Seconds the backup waits for a table's lock before it fails (C(pg_dump --lock-wait-timeout), and the run's
        own reads of the tables) - behind a session holding a table exclusively (C(ALTER TABLE), C(VACUUM FULL),
        C(TRUNCATE), a migration left open) a backup would otherwise wait for ever, and every later run would find
        the job's lock taken. The failure names the tables and the sessions holding them; nothing of the backup is
        listed.
      - V(0) waits as long as it takes.
    type: int
    default: 600
notes:
  - Restore without this collection, with stock tools, in one line -
    C(zstd -dc FILE.dump.zst | pg_restore --dbname=NEWDB --no-owner).
  - A directory backup (O(jobs) other than 1) restores with stock tools in parallel -
    C(pg_restore -j 4 --dbname=NEWDB --no-owner DIR.dir).
seealso:
  - module: doctorq.backup.backup_info
  - module: doctorq.backup.pg_restore_safe
  - module: doctorq.backup.pgbackrest_backup
  - module: doctorq.backup.s3_lifecycle
"""

EXAMPLES = r"""
- name: Back up the app database to disk and S3
  doctorq.backup.pg_backup:
    db: doctorq
    login_host: 127.0.0.1
    login_password: "{{ vault_pg_password }}"
    backup_dir: /var/backups/doctorq/database
    s3:
      bucket: doctorq-backups
      prefix: "doctorq/{{ inventory_hostname }}"
    notification:
      webhook_url: "{{ vault_slack_webhook }}"

- name: Back up to a MinIO server with gzip, keeping 7 days of dailies
  doctorq.backup.pg_backup:
    db: doctorq
    compression: gzip
    retention_daily_days: 7
    s3:
      bucket: backups
      endpoint_url: https://minio.internal:9000
      access_key: "{{ vault_minio_access_key }}"
      secret_key: "{{ vault_minio_secret_key }}"

- name: See what a backup would do
  doctorq.backup.pg_backup:
    db: doctorq
  check_mode: true
"""

RETURN = r"""
backup:
  description: Facts of the dump made.
  returned: success, and on an S3 failure after the local copy was completed
  type: dict
  contains:
    id:
      description: Backup id (C(<db>_full_<YYYYmmdd_HHMMSS>), UTC).
      type: str
      returned: always
    path:
      description: Local path of the backup file (the directory of a directory backup).
      type: str
      returned: always
    format:
      description: V(directory) for a directory backup (O(jobs) other than 1).
      type: str
      returned: for a directory backup
    jobs:
      description: pg_dump's jobs of a directory backup.
      type: int
      returned: for a directory backup
    file_count:
      description: Number of files of a directory backup.
      type: int
      returned: for a directory backup
    size:
      description: Size in bytes.
      type: int
      returned: always
    sha256:
      description: SHA-256 of the file.
      type: str
      returned: always
    md5:
      description: MD5 of the file.
      type: str
      returned: always
    s3_uri:
      description: "URI of the S3 copy; null without S3, or when S3 failed in this run."
      type: str
      returned: always
    s3_checksum:
      description:
        - The checksum S3 holds for the object and verified, null without an S3 copy.
        - C(algorithm) V(SHA256) with C(type) V(FULL_OBJECT) for a one-PUT object (which also carries
          C(x-amz-meta-sha256)); V(CRC32) V(FULL_OBJECT) for a multipart one; V(SHA256) V(COMPOSITE) (C(<b64>-<parts>))
          on a server without full-object checksums. The SHA-256 of the whole file is always RV(backup.sha256).
      type: dict
      returned: always
      sample: {"algorithm": "CRC32", "type": "FULL_OBJECT", "value": "q3bGxA=="}
    duration_s:
      description: Seconds the backup took.
      type: float
      returned: always
    table_count:
      description: Number of tables in the database.
      type: int
      returned: always
    weekly:
      description: Whether a weekly copy was made.
      type: bool
      returned: always
    weekly_path:
      description: Path of the weekly copy.
      type: str
      returned: when weekly
    weekly_s3_uri:
      description: URI of the weekly S3 copy.
      type: str
      returned: when weekly
  sample:
    id: doctorq_full_20251107_020000
    path: /var/backups/doctorq/database/doctorq_full_20251107_020000.dump.zst
    size: 118231040
    sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    s3_uri: s3://doctorq-backups/doctorq/db1/doctorq/2025-11-07/doctorq_full_20251107_020000.dump.zst
deleted:
  description: Backups of O(db) removed by retention (each dump with its checksum files and manifest), on disk and in S3.
  returned: success
  type: list
  elements: dict
leftovers_removed:
  description: Partial dumps and unfinished uploads of interrupted earlier runs of O(db) that were removed.
  returned: success
  type: list
  elements: str
caught_up:
  description:
    - Complete local backups an earlier run could not upload (S3 was down), uploaded by this run, newest first
      (C(id), C(s3_uri), C(weekly_s3_uri) when its weekly copy was copied too, or C(error) when the local file no
      longer matches its manifest and was not uploaded).
    - Every complete local backup that never reached S3 (the first run's too) is caught up, unless S3 retention would
      delete it at once; one that reached S3 once and was deleted there is not uploaded again.
  returned: when there were any
  type: list
  elements: dict
plan:
  description:
    - In check mode, what a run would dump and write, upload (C(would_upload), the catch-up) and delete
      (C(would_delete)).
    - C(would_delete) counts the backup the run would make, so it is exactly what the run deletes.
  returned: check mode
  type: dict
log: {description: "The run's log lines - the dump, checksums, uploads, weekly copy and retention.",
      returned: always, type: list, elements: str}
log_file: {description: "Path of the run log, C(backup_<db>_<YYYYmmdd_HHMMSS>.log) in O(log_dir) (default O(backup_dir)).",
           returned: when not in check mode, type: str}
"""

from ansible_collections.doctorq.backup.plugins.module_utils.ansible_glue import run_job
from ansible_collections.doctorq.backup.plugins.module_utils.backup import BackupJob, backup_argument_spec, run_backup


def main() -> None:
    run_job(backup_argument_spec(), BackupJob.from_params, run_backup, db_required=True)


if __name__ == "__main__":
    main()
