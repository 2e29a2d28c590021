#!/usr/bin/python
# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: files_restore
short_description: Verified, reversible restore of a file backup into a directory
version_added: 0.1.0
description:
  - Restores a backup written by M(doctorq.backup.files_backup) so that the target directory is either what it was or
    exactly the backup's tree, never half of each.
  - Finds the backup through its manifest (a local file, an C(s3://bucket/key) URI, or the newest complete backup of the
    file set O(name), optionally the newest before a time). A backup without a manifest is refused, so is a database
    backup.
  - Reads every byte once and compares SHA-256 and MD5 with the manifest before anything else; S3 downloads are hashed
    while they stream. A mismatch fails and leaves the target untouched.
  - An archive in GLACIER or DEEP_ARCHIVE is restored from the archive tier first (after the confirmation check); the
    module waits up to O(archive.wait_timeout) or returns C(pending=true) telling when to run again. Running again is safe.
  - Reads every header of the archive before extracting anything and refuses the whole archive if any member has an
    absolute path, a C(..) component, is a hard link out of the archive, lies under a symlink of the archive, or is a
    device file.
  - Replacing a non-empty directory needs O(confirm) equal to its path, and takes a safety backup of it first
    (C(<backup_dir>/safety/), a complete file backup).
  - Extracts into a staging directory beside the target, checks the tree against the archive (files, symlinks, bytes)
    and against the SHA-256 the backup recorded for a sample of files, then swaps it into place (atomically with
    C(renameat2) where the file system allows, else two renames rolled back on failure). The old directory is kept
    as C(<target>.pre_restore_<timestamp>). Any failure before the swap removes the staging directory and leaves the
    target as it was.
  - A new or empty directory is restored into without confirmation.
  - Run as root, owners and groups are restored (by number), as are extended attributes and ACLs; otherwise the files
    belong to the user running the restore.
  - Every step is logged in C(restore_<name>_files_<timestamp>.log), an audit record is appended to
    C(restore_audit.jsonl) in O(backup_dir), and a webhook is notified.
extends_documentation_fragment:
  - doctorq.backup.common.files
  - doctorq.backup.common
  - doctorq.backup.s3
  - doctorq.backup.notify
  - doctorq.backup.restore
attributes:
  check_mode:
    description:
      - Finds the backup, checks its archive state, verifies its checksums, checks every member of the archive and
        reports the plan; changes nothing (no archive restore is requested).
options:
  name:
    description: File set whose newest backup O(source=latest) restores.
    type: str
  source:
    description:
      - V(latest) (the newest complete backup of O(name) on disk or in O(s3); the local copy is preferred when both hold
        it), a local backup file path, or an C(s3://bucket/key) URI of a backup file.
      - When O(s3) cannot be listed (S3 down, credentials refused), V(latest) takes the newest backup in
        O(backup_dir), with a warning naming the S3 problem.
    type: str
    default: latest
  backup_dir:
    default: /var/backups/files
  target:
    description:
      - Directory to restore into. Defaults to the directory that was backed up (the backup's root), which needs
        O(confirm). Required when the backup was taken relative to C(/) (several paths, or the configuration preset);
        its tree then appears under O(target).
      - Must not be C(/) nor contain O(backup_dir).
    type: path
  confirm:
    description: Must equal the target directory's path when it exists and is not empty; anything else fails and names what to type.
    type: str
    default: ''
  previous:
    description:
      - What becomes of the tree a swap leaves as C(<target>.pre_restore_<timestamp>).
      - Until 1.0.0 also read flat, as C(drop_previous), with a deprecation warning.
    type: dict
    suboptions:
      drop:
        description: After a successful swap, delete the previous tree instead of keeping it.
        type: bool
        default: false
  work_dir:
    description: Where S3 downloads go; defaults to C(<backup_dir>/.restore-work).
    type: path
seealso:
  - module: doctorq.backup.files_backup
  - module: doctorq.backup.backup_info
"""

EXAMPLES = r"""
- name: Put the newest backup of the uploads back in place (the old tree is kept beside it)
  doctorq.backup.files_restore:
    name: uploads
    confirm: /srv/doctorq/uploads
    backup_dir: /var/backups/doctorq/files

- name: Restore the PostgreSQL configuration into a new directory to compare it with the live one
  doctorq.backup.files_restore:
    name: postgresql_config
    target: /root/restored-pg-config
    backup_dir: /var/backups/doctorq/files

- name: Restore yesterday's reports from S3 into a scratch directory
  doctorq.backup.files_restore:
    name: reports
    before: "{{ '%Y-%m-%dT00:00:00Z' | strftime }}"
    target: /srv/scratch/reports
    s3:
      bucket: doctorq-backups
      prefix: "doctorq/{{ inventory_hostname }}"

- name: Restore an archived (GLACIER) backup of the uploads, waiting up to 10 minutes for an Expedited retrieval
  doctorq.backup.files_restore:
    name: uploads
    target: /srv/scratch/uploads
    archive:
      tier: Expedited
      wait_timeout: 600
    s3:
      bucket: doctorq-backups
      prefix: "doctorq/{{ inventory_hostname }}"
  register: restore
  until: not (restore.pending | default(false))
"""

RETURN = r"""
source:
  description: The backup restored (id, name, kind, location, ref, started_at, size, and the manifest's fileset).
  returned: when a backup was found
  type: dict
checksums:
  description: SHA-256 and MD5 of the archive and whether the bytes read matched them.
  returned: when a backup was found
  type: dict
target:
  description: The directory restored into.
  returned: when a backup was found
  type: str
pending:
  description: True while the archive is being restored from an archive tier (the target untouched); run again later.
  returned: when archived
  type: bool
archive:
  description: The archive's storage class and the state of its archive restore.
  returned: when archived
  type: dict
contents:
  description: What the archive holds (count, files, dirs, symlinks, bytes), from its headers.
  returned: when the checksums matched
  type: dict
sample_verified:
  description: How many files of the backup's content sample were found identical after extraction.
  returned: when extracted
  type: int
plan:
  description: >-
    In check mode, what would be done - target, target_exists, replaces, confirmation_ok, safety_backup, previous
    (where the replaced tree would be kept) and archive_state.
  returned: check mode
  type: dict
s3_error:
  description: >-
    Why O(s3) could not be listed when O(source=latest) searched it; the newest backup of the file set in
    O(backup_dir) was restored instead (a warning and the run log say so).
  returned: when S3 could not be listed
  type: str
safety_backup:
  description: Path of the safety backup of the replaced directory.
  returned: when a non-empty directory was replaced
  type: str
previous:
  description: Where the replaced tree is kept.
  returned: when a non-empty directory was replaced
  type: str
durations:
  description: Seconds per phase (verify or download, inspect, safety_backup, extract, swap).
  returned: always
  type: dict
log: {description: "Timestamped log lines of every step, from finding the backup to the swap.",
      returned: always, type: list, elements: str}
log_file: {description: "Path of the run log, C(restore_<name>_files_<YYYYmmdd_HHMMSS>.log) in O(backup_dir).",
           returned: when not in check mode, type: str}
audit_file: {description: "Path of C(restore_audit.jsonl) in O(backup_dir), the audit log of every restore (here with
               C(source_type) C(file_set)); this run appended its line.", returned: when not in check mode, type: str}
"""

from ansible_collections.doctorq.backup.plugins.module_utils.ansible_glue import run_job
from ansible_collections.doctorq.backup.plugins.module_utils.files_restore_job import (
    FilesRestoreJob, files_restore_argument_spec, run_files_restore,
)


def main() -> None:
    run_job(files_restore_argument_spec(), FilesRestoreJob.from_params, run_files_restore, postgres=False)


if __name__ == "__main__":
    main()
