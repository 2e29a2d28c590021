#!/usr/bin/python
# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: files_backup
short_description: Verified streaming backup of directories and files (application data, server configuration) to disk and S3
version_added: 0.1.0
description:
  - Archives directories and files with GNU tar (POSIX format; numeric owners, modes, symlinks, hard links, extended
    attributes, ACLs where tar supports them, sparse files), compresses the stream, hashes it (SHA-256 and MD5) and writes
    it to the backup directory and to S3 in one pass, through the same engine as M(doctorq.backup.pg_backup).
  - Writes C(<file>.md5), C(<file>.sha256) and a JSON manifest (written last; C(type=files), with the number of entries,
    files, directories, symlinks, bytes of file data, the root and the top-level paths). Weekly copies, retention, crash
    clean-up, the lock, the run log, the webhook and the Prometheus textfile work as for database backups.
  - A file that changes, shrinks or disappears while tar reads it is reported by name in the result
    (C(changed_during_backup)), the manifest, the log and the webhook. With O(on_change=warn) (default) the backup is
    kept and the module warns; with O(on_change=fail) nothing is kept and the module fails.
  - O(preset=postgresql_config) backs up the PostgreSQL server configuration of the host,
    C(/etc/postgresql/<version>/<cluster>/) (C(postgresql.conf), C(conf.d), C(pg_hba.conf), C(pg_ident.conf), ...), plus
    the files the configuration names outside it (SSL certificate, key, CA and CRL files, an C(hba_file) elsewhere,
    included files) and the data directory's C(postgresql.auto.conf) (the settings C(ALTER SYSTEM) writes).
  - Names are C(<name>_files_<YYYYmmdd_HHMMSS>.tar.zst) on disk and C(<prefix>/<name>/<YYYY-MM-DD>/...) in S3, beside the
    database backups; a database and a file set of the same name never touch each other's files.
  - Restore with M(doctorq.backup.files_restore), or with stock tools in one line (see notes).
extends_documentation_fragment:
  - doctorq.backup.common.files
  - doctorq.backup.common
  - doctorq.backup.s3
  - doctorq.backup.policy
  - doctorq.backup.notify
attributes:
  check_mode:
    description: Checks that the paths are readable, the tools present and the bucket reachable, and reports what would be written and deleted.
options:
  name:
    description:
      - Name of the file set; it names the backup files and the S3 folder. Any name but V(weekly); characters other
        than letters, digits, C(.), C(_) and C(-) (and a leading C(.) or C(-)) are percent-encoded (UTF-8) in file
        names and S3 keys, the manifest keeps the name as given.
      - Defaults to the preset's name (V(postgresql_config)) with O(preset).
    type: str
  paths:
    description:
      - Absolute paths of directories and files to back up. Symlinks given here are archived as symlinks.
      - Required unless O(preset) is set; with a preset they are added to the preset's paths.
    type: list
    elements: path
    default: []
  preset:
    description:
      - V(postgresql_config) adds C(<pg_config_dir>/<pg_version>/<pg_cluster>/) and the files its configuration names
        outside it. Files named but missing are reported as warnings.
    type: str
    choices: [postgresql_config]
  pg_config_dir:
    description: Where the Debian-style PostgreSQL configuration lives (O(preset=postgresql_config)).
    type: path
    default: /etc/postgresql
  pg_version:
    description: Major version of the cluster (O(preset=postgresql_config)); default every version that has O(pg_cluster).
    type: str
  pg_cluster:
    description: Cluster name (O(preset=postgresql_config)).
    type: str
    default: main
  root:
    description:
      - Archive member names are relative to this directory. Defaults to the directory itself when O(paths) is one
        directory (a restore then puts its content back in place), otherwise to C(/) (members are full paths without
        the leading C(/)). Every path must be inside it.
    type: path
  exclude:
    description:
      - GNU tar C(--exclude) patterns. A pattern without C(/) matches a name at any depth (V(*.tmp), V(cache));
        wildcards match C(/) too. The backup and log directories are excluded by themselves when inside a path.
    type: list
    elements: str
    default: []
  one_file_system:
    description: Stay in the file system of each path (do not descend into mount points).
    type: bool
    default: false
  on_change:
    description:
      - What a file that changed while it was read makes of the run. V(warn) keeps the backup and reports the files;
        V(fail) keeps nothing and fails.
    type: str
    choices: [warn, fail]
    default: warn
  backup_dir:
    description: Local directory of the backups; weekly copies go to its C(weekly/) subdirectory. Created (0700) if missing.
    type: path
    default: /var/backups/files
notes:
  - Run as root to back up files of several owners and to read keys (C(/etc/ssl/private)).
  - Restore without this collection, with stock tools, in one line -
    C(mkdir NEWDIR && zstd -dc FILE.tar.zst | tar -x --numeric-owner --xattrs --acls -C NEWDIR).
  - The metrics file is C(doctorq_files_backup_<name>.prom); it adds C(last_file_count) and C(last_changed_files).
seealso:
  - module: doctorq.backup.files_restore
  - module: doctorq.backup.pg_backup
  - module: doctorq.backup.backup_info
"""

EXAMPLES = r"""
- name: Back up the uploads directory, without caches and temporary files
  doctorq.backup.files_backup:
    name: uploads
    paths: [/srv/doctorq/uploads]
    exclude: ["*.tmp", cache]
    backup_dir: /var/backups/doctorq/files
    s3:
      bucket: doctorq-backups
      prefix: "doctorq/{{ inventory_hostname }}"

- name: Back up the PostgreSQL configuration of the host (conf.d, pg_hba.conf, certificates)
  doctorq.backup.files_backup:
    preset: postgresql_config
    pg_version: "15"
    backup_dir: /var/backups/doctorq/files

- name: Fail when anything changes while it is read (an application stopped for the backup)
  doctorq.backup.files_backup:
    name: reports
    paths: [/srv/doctorq/reports]
    on_change: fail
"""

RETURN = r"""
backup:
  description: Facts of the archive made.
  returned: success, and on an S3 failure after the local copy was completed
  type: dict
  contains:
    id: {description: "Backup id (C(<name>_files_<YYYYmmdd_HHMMSS>), UTC).", type: str, returned: always}
    path: {description: Local path of the archive., type: str, returned: always}
    size: {description: Size of the compressed archive in bytes., type: int, returned: always}
    sha256: {description: SHA-256 of the archive., type: str, returned: always}
    md5: {description: MD5 of the archive., type: str, returned: always}
    s3_uri: {description: "URI of the S3 copy, null without S3.", type: str, returned: always}
    name: {description: The file set's name (O(name))., type: str, returned: always}
    source_type: {description: Always C(file_set)., type: str, returned: always}
    contents:
      description: >-
        root, paths (as in the archive), sources (absolute), exclude, preset, count (entries), files, dirs, symlinks,
        bytes (file data), changed_during_backup, tar_version, and sample (path, size and SHA-256 of up to 32 files read
        back from disk, checked by files_restore).
      type: dict
      returned: always
    type: {description: "Always C(files): RV(backup.source_type) under its name before; deprecated, removed in 1.0.0.",
           type: str, returned: always}
    fileset: {description: "RV(backup.contents) under its name before; deprecated, removed in 1.0.0.", type: dict,
              returned: always}
    weekly: {description: Whether a weekly copy was made., type: bool, returned: always}
    weekly_path: {description: Path of the weekly copy., type: str, returned: when weekly}
    weekly_s3_uri: {description: URI of the weekly S3 copy., type: str, returned: when weekly}
  sample:
    id: uploads_files_20251107_020000
    path: /var/backups/doctorq/files/uploads_files_20251107_020000.tar.zst
    size: 52428800
    name: uploads
    source_type: file_set
    contents: {root: /srv/doctorq/uploads, paths: ["."], count: 1204, files: 1180, dirs: 24, symlinks: 0, bytes: 73400320,
              changed_during_backup: []}
changed_during_backup:
  description: Files tar saw change, shrink or disappear while it read them (C(path) as in the archive, C(reason)).
  returned: when the archive was written
  type: list
  elements: dict
deleted:
  description: Archives of the set removed by retention (each with its checksum files and manifest), on disk and in S3.
  returned: success
  type: list
  elements: dict
leftovers_removed:
  description: Partial archives and unfinished uploads of interrupted earlier runs of the set that were removed.
  returned: success
  type: list
  elements: str
plan:
  description: >-
    In check mode, what a run would archive, upload (C(would_upload), the catch-up) and delete (C(would_delete));
    C(would_delete) counts the archive the run would make, so it is exactly what the run deletes.
  returned: check mode
  type: dict
log: {description: "The run's log lines - tar, checksums, uploads, weekly copy and retention.",
      returned: always, type: list, elements: str}
log_file: {description: "Path of the run log, C(backup_<name>_files_<YYYYmmdd_HHMMSS>.log) in O(log_dir) (default O(backup_dir)).",
           returned: when not in check mode, type: str}
"""

from ansible_collections.doctorq.backup.plugins.module_utils.ansible_glue import run_job
from ansible_collections.doctorq.backup.plugins.module_utils.files_backup_job import FilesJob, files_backup_argument_spec, run_files_backup


def main() -> None:
    run_job(files_backup_argument_spec(), FilesJob.from_params, run_files_backup, postgres=False,
            required_one_of=[("paths", "preset")])


if __name__ == "__main__":
    main()
