#!/usr/bin/python
# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_restore_safe
short_description: Verified, reversible restore of a PostgreSQL database from disk, S3 or Glacier
version_added: 0.1.0
description:
  - Restores a backup written by M(doctorq.backup.pg_backup) so that the on-call engineer cannot make things worse.
  - Finds the backup through its manifest (a local file, an C(s3://bucket/key) URI, or the newest complete backup of a
    database, optionally the newest before a time). A backup without a manifest is refused, so is a file backup.
  - Reads every byte once and compares SHA-256 and MD5 with the manifest before touching any database; S3 downloads are
    hashed while they stream. A mismatch fails and leaves the target untouched.
  - Objects in GLACIER or DEEP_ARCHIVE are restored from the archive tier first; the module waits up to
    O(archive.wait_timeout) or returns C(pending=true) telling when to run again. Running again is safe.
  - Replacing an existing database needs O(confirm) equal to its name, and takes a safety backup of it first.
  - In O(mode=swap) (default) the backup is restored into C(<db>__restoring_<timestamp>), verified (every table of the
    manifest present, row counts equal), and only then swapped in one transaction; the old database is kept as
    C(<db>__pre_restore_<timestamp>). Any failure drops the half-restored database and leaves the target as it was.
  - In O(mode=replace) the target is dropped and restored in place, as the old scripts did; if that fails the safety
    backup is restored automatically. Before the drop the run writes its intent (C(.restore_intent_<db>.json) in
    O(backup_dir)); if the run is killed, the next run of this module for that database restores the safety backup
    into it (setting a half-restored one aside as C(<db>__interrupted_<timestamp>)) and then does its own restore,
    or stops there when O(source) is that safety backup; M(doctorq.backup.pg_backup) refuses to back the database up
    until then, naming the command.
  - Programs die with the run (a C(kill -9) leaves no C(pg_restore) writing), and the next run of a database drops
    the C(<db>__restoring_<timestamp>) databases that killed runs left; while a restore of a database runs, it holds
    a server-side lock, so another restore of it (from any host) is refused and never takes its database for a leftover.
  - Every step is logged with a timestamp in C(restore_<db>_<timestamp>.log), an audit record is appended to
    C(restore_audit.jsonl) in O(backup_dir), and a webhook is notified.
  - Point-in-time recovery of a whole cluster is M(doctorq.backup.pg_pitr_restore). Until 1.0.0 the module's action
    plugin still hands a task with the old C(pitr_*) options (C(pitr_target) or C(pitr_drill) set) to it, with the
    options without the prefix and a deprecation warning; C(stanza), C(pgbackrest_config) and C(pgbackrest_user) are
    ignored otherwise.
extends_documentation_fragment:
  - doctorq.backup.common
  - doctorq.backup.postgres
  - doctorq.backup.s3
  - doctorq.backup.notify
  - doctorq.backup.restore
attributes:
  check_mode:
    description: Finds the backup, checks its archive state, verifies its checksums and reports the plan; changes nothing.
options:
  db:
    description:
      - Database to restore into. Created if it does not exist (no confirmation needed then).
    required: true
  source:
    description:
      - V(latest) (the newest complete backup of O(source_db) on disk or in O(s3); the local copy is preferred when
        both hold it), a local backup file path, or an C(s3://bucket/key) URI of a backup file.
      - When O(s3) cannot be listed (S3 down, credentials refused), V(latest) takes the newest backup in
        O(backup_dir), with a warning naming the S3 problem.
    type: str
    default: latest
  source_db:
    description: Database whose backups O(source=latest) searches; defaults to O(db).
    type: str
  backup_dir:
    default: /var/backups/postgresql
  confirm:
    description:
      - Must equal O(db) when O(db) exists and would be replaced; anything else fails and names what to type.
    type: str
    default: ''
  mode:
    description: V(swap) restores beside the target and swaps names when verified; V(replace) drops and restores in place.
    type: str
    choices: [swap, replace]
    default: swap
  jobs:
    description:
      - Parallel C(pg_restore) jobs; V(0) means one per core.
      - A one-file backup restores with one job when unset. With V(1) the archive streams through
        C(zstd -dc | pg_restore) with no extra disk space. With more jobs it is first decompressed to O(work_dir)
        (C(pg_restore -j) needs a seekable file), but an archive written through a pipe has no data offsets, so that
        was measured slower (1.50 vs 1.26 x a bare C(pg_restore -j2) of a C(pg_dump -f) file, benchmarks/README.md).
      - A directory backup (M(doctorq.backup.pg_backup) O(doctorq.backup.pg_backup#module:jobs) other than 1) restores
        with C(pg_restore -j N) straight from its directory, by default with the backup's own number of jobs, at most
        one per core. From S3 its files are downloaded in parallel to O(work_dir) first; on disk they are read in
        place. Every file is checked against the manifest (size, SHA-256, MD5) before anything is touched.
    type: int
  previous:
    description:
      - What becomes of the databases a swap leaves as C(<db>__pre_restore_<timestamp>).
      - Until 1.0.0 also read flat, as C(drop_previous) and C(previous_retention_days), with a deprecation warning.
    type: dict
    suboptions:
      drop:
        description: After a successful swap, drop the previous database instead of keeping it.
        type: bool
        default: false
      retention_days:
        description: Drop C(<db>__pre_restore_*) databases older than this many days; V(0) keeps them until dropped by hand.
        type: int
        default: 0
  load:
    description:
      - How the verified backup is loaded into the database, and how closely what arrived must match the manifest.
        C(pg_restore)'s parallelism is O(jobs), named as in M(doctorq.backup.pg_backup) and
        M(doctorq.backup.restore_drill).
      - Until 1.0.0 also read flat, with a deprecation warning - C(restore_globals) as O(load.globals), C(no_owner),
        C(no_privileges) and C(row_tolerance) as the suboptions of the same name.
    type: dict
    suboptions:
      globals:
        description:
          - Restore the backup's globals (roles, tablespaces; M(doctorq.backup.pg_backup)'s
            O(doctorq.backup.pg_backup#module:globals)) first, for a restore onto a new server. Existing roles and
            tablespaces are kept (not created again); any other statement that fails (for example a role change that
            needs a superuser) fails the restore before any database is touched.
        type: bool
        default: false
      no_owner:
        description: Do not restore object ownership (C(pg_restore --no-owner)).
        type: bool
        default: false
      no_privileges:
        description: Do not restore privileges (C(pg_restore --no-privileges)).
        type: bool
        default: false
      row_tolerance:
        description:
          - Tables of the manifest with an exact row count must match exactly; larger tables (estimates only) may
            differ by this fraction (or 1000 rows).
        type: float
        default: 0.1
  work_dir:
    description: Where downloads and decompressed archives go; defaults to C(<backup_dir>/.restore-work).
    type: path
  partial:
    description:
      - Restore only some tables and/or schemas of the backup of O(db) (or O(source_db)) into a new database, for
        "give me yesterday's version of this table". O(db) itself is never touched, so no safety backup is taken and
        no confirmation is needed; the backup is found and its checksums verified as for a full restore, and the run
        log and the audit line (C(mode=partial)) say what was restored where.
      - Every table and schema named must be in the backup's table of contents (C(pg_restore --list)); one that is not
        fails the run before anything is created, naming it and what the backup has.
      - A table comes with its schema (created when not C(public)), its data, the sequences it owns or names in a
        column default (with their values), its column defaults, indexes, primary-key, unique and check constraints,
        triggers, rules, policies, comments and grants (C(pg_restore --use-list) of those entries). Anything that
        also needs an object not restored is left out with a warning naming it - foreign keys to tables not
        restored, triggers whose function is elsewhere, views over other tables. Types, functions and extensions a
        table needs from outside the restored schemas are not taken; C(pg_restore) then fails naming them, and the
        new database is dropped.
      - Afterwards every restored table is checked against the manifest (present, rows counted as for a full
        restore). Only the new-database form exists; to put rows back into the live database, copy them from there.
        One-file backups only (not directory backups).
    type: dict
    suboptions:
      tables:
        description: Tables as C(schema.table), or C(table) for one in C(public); names as they are, unquoted.
        type: list
        elements: str
        default: []
      schemas:
        description: Schemas restored whole (every object in them).
        type: list
        elements: str
        default: []
      target_db:
        description:
          - The new database to restore into; it must not exist (an existing one is refused, whatever O(confirm)
            says). Defaults to C(<db>__partial_<timestamp>).
        type: str
seealso:
  - module: doctorq.backup.pg_backup
  - module: doctorq.backup.backup_info
  - module: doctorq.backup.pg_pitr_restore
"""

EXAMPLES = r"""
- name: Restore the newest backup of doctorq in place of the live database
  doctorq.backup.pg_restore_safe:
    db: doctorq
    confirm: doctorq
    backup_dir: /var/backups/doctorq/database
    s3:
      bucket: doctorq-backups
      prefix: "doctorq/{{ inventory_hostname }}"

- name: Restore yesterday's state into a new database to look at it (no confirmation needed)
  doctorq.backup.pg_restore_safe:
    db: doctorq_yesterday
    source_db: doctorq
    before: "{{ '%Y-%m-%dT00:00:00Z' | strftime }}"

- name: "3 a.m.: yesterday's version of one table, beside the live database"
  doctorq.backup.pg_restore_safe:
    db: doctorq
    before: "{{ '%Y-%m-%dT00:00:00Z' | strftime }}"
    partial:
      tables: [public.orders]
      target_db: doctorq_orders_yesterday

- name: Restore onto a new server, roles and tablespaces first
  doctorq.backup.pg_restore_safe:
    db: doctorq
    load:
      globals: true

- name: Restore an archived backup, waiting up to 10 minutes for an Expedited retrieval
  doctorq.backup.pg_restore_safe:
    db: doctorq
    confirm: doctorq
    source: s3://doctorq-backups/doctorq/db1/doctorq/2025-10-01/doctorq_full_20251001_020000.dump.zst
    archive:
      tier: Expedited
      wait_timeout: 600
  register: restore
  until: not (restore.pending | default(false))
"""

RETURN = r"""
source:
  description:
    - The backup restored (id, database, kind, location, ref, started_at, size).
    - For a directory backup also C(format) (V(directory)) and C(files), its number of files.
  returned: when a backup was found
  type: dict
checksums:
  description: SHA-256 and MD5 of the backup and whether the bytes read matched them.
  returned: when a backup was found
  type: dict
pending:
  description: True while the backup (every file of a directory backup) is being restored from an archive tier; run again later.
  returned: when archived
  type: bool
archive:
  description: Per data file of the backup (the dump, or each file of a directory backup), its storage class and archive restore.
  returned: when archived
  type: dict
plan:
  description:
    - In check mode, what would be done - target_exists, confirmation_ok, archive_state, drop_leftovers,
      finish_interrupted (a killed restore's intent), safety_backup, restore_into, rename_target_to, drop_previous or
      drop_and_recreate.
  returned: check mode
  type: dict
s3_error:
  description:
    - Why O(s3) could not be listed when O(source=latest) searched it; the newest backup of the database in
      O(backup_dir) was restored instead (a warning and the run log say so).
  returned: when S3 could not be listed
  type: str
partial:
  description:
    - With O(partial), what was asked and done (tables, schemas, target_db, from_database, C(live_database_touched)
      false, C(safety_backup) V(not needed), restored_tables, skipped - entries left out and why, rows - per restored
      table, the manifest's row count it was checked against).
  returned: when O(partial) is set and a backup was found
  type: dict
tables:
  description: The verification after the restore (expected, found, missing, mismatched, exact).
  returned: success
  type: dict
safety_backup:
  description: Path of the safety backup of the replaced database.
  returned: when a database was replaced
  type: str
previous_database:
  description: Name the replaced database is kept under (O(mode=swap)).
  returned: when a database was replaced in swap mode
  type: str
leftovers_removed:
  description: The C(<db>__restoring_<timestamp>) databases killed restores had left, dropped by this run.
  returned: a real run that got the restore lock
  type: list
  elements: str
interrupted_restore:
  description:
    - The intent of a killed restore of this database and what this run did about it (mode, phase, pid, started_at,
      log_file, safety_backup; C(set_aside) - where a half-restored database was kept; C(reopened) - databases opened
      to connections again; C(tables) - the verification of the safety backup restored).
  returned: when a killed restore had left its intent
  type: dict
durations:
  description: Seconds per phase (download, verify, safety_backup, restore, verify_after, swap).
  returned: always
  type: dict
log: {description: "Timestamped log lines of every step of the restore.", returned: always, type: list, elements: str}
log_file: {description: "Path of the run log, C(restore_<db>_<YYYYmmdd_HHMMSS>.log) in O(backup_dir).",
           returned: when not in check mode, type: str}
audit_file: {description: "Path of C(restore_audit.jsonl) in O(backup_dir), the audit log of every restore; this run appended its line.",
             returned: when not in check mode, type: str}
"""

from ansible_collections.doctorq.backup.plugins.module_utils.ansible_glue import run_job
from ansible_collections.doctorq.backup.plugins.module_utils.restore import RestoreJob, restore_argument_spec, run_restore


def main() -> None:
    run_job(restore_argument_spec(), RestoreJob.from_params, run_restore, db_required=True)


if __name__ == "__main__":
    main()
