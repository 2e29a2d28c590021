#!/usr/bin/python
# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: restore_drill
short_description: Prove that the newest backup of a PostgreSQL database or a file set restores, and measure RTO and RPO
version_added: 0.1.0
description:
  - Restores the newest complete backup of O(db) (on disk or in S3) into a scratch database
    C(<db>__drill_<timestamp>) through the same engine as M(doctorq.backup.pg_restore_safe), so checksums are verified
    before the restore and every table of the manifest is checked after it.
  - With O(file_set) instead, restores the newest backup of that file set into a new, empty scratch directory under
    O(scratch_dir) through the same engine as M(doctorq.backup.files_restore) (checksums, every archive member, the
    tree against the archive), then compares the restored tree with the manifest - regular files, symlinks, bytes of
    file data and the SHA-256 the backup recorded for a sample of files - and always removes the scratch directory.
  - Reports RTO (seconds to a verified restore) and RPO (age of the newest restorable backup), writes a JSON report
    and Prometheus metrics, notifies on failure, and drops the scratch database (removes the scratch directory). It
    never touches O(db) or the file set's directories.
  - The drill fails when the restore or the comparison fails, when the newest backup is still in an archive tier, or
    when the newest backup is older than O(max_rpo_hours).
extends_documentation_fragment:
  - doctorq.backup.common
  - doctorq.backup.postgres
  - doctorq.backup.s3
  - doctorq.backup.notify
attributes:
  check_mode:
    support: none
    description: A drill is a real restore into a scratch database or directory; there is nothing to predict.
  platform:
    description:
      - Runs on the database host (or any host that reaches the server), with the PostgreSQL client programs.
      - A file-set drill needs GNU tar and no PostgreSQL; the PostgreSQL connection options are ignored then.
options:
  db:
    description:
      - Database whose newest backup is drilled.
      - Exactly one of O(db) and O(file_set) is required.
  file_set:
    description:
      - File set (the O(doctorq.backup.files_backup#module:name) of its backups) whose newest backup is drilled, instead
        of a database.
    type: str
  backup_dir:
    description:
      - Local backup directory (searched for backups; the restore's log and audit go there) - the database backups'
        directory, or with O(file_set) the file backups' directory.
      - Defaults to C(/var/backups/postgresql), or C(/var/backups/files) with O(file_set).
    type: path
  scratch_dir:
    description:
      - With O(file_set), the directory in which the drill makes its scratch directory (C(.drill_<set>_<timestamp>_*),
        mode 0700); defaults to O(backup_dir). It needs room for the restored tree.
    type: path
  report_dir:
    description: Directory of the JSON report C(drill_<db>.json) (C(drill_files_<file_set>.json)). Omit to write none.
    type: path
  max_rpo_hours:
    description: Fail the drill when the newest restorable backup is older than this.
    type: float
    default: 26.0
  jobs:
    description:
      - Parallel C(pg_restore) jobs (see M(doctorq.backup.pg_restore_safe)); V(1) streams, V(0) means one per core.
      - When unset, one for a one-file backup and the backup's own number of jobs (at most one per core) for a
        directory backup, which is restored the way M(doctorq.backup.pg_restore_safe) restores it.
      - Not used with O(file_set).
    type: int
seealso:
  - module: doctorq.backup.pg_restore_safe
  - module: doctorq.backup.files_restore
"""

EXAMPLES = r"""
- name: Drill the newest backup of doctorq
  doctorq.backup.restore_drill:
    db: doctorq
    backup_dir: /var/backups/doctorq/database
    report_dir: /var/lib/doctorq-backup/drills
    notification:
      metrics_dir: /var/lib/prometheus/node-exporter
  register: drill

- name: Show RTO and RPO
  ansible.builtin.debug:
    msg: "{{ drill.report.rto_s }} s to restore; the backup was {{ drill.report.rpo_s }} s old"

- name: Drill the newest backup of the uploads (restored into a scratch directory, compared, removed)
  doctorq.backup.restore_drill:
    file_set: uploads
    backup_dir: /var/backups/doctorq/files
    report_dir: /var/lib/doctorq-backup/drills
  become: true
"""

RETURN = r"""
report:
  description: The drill report (also written to O(report_dir)).
  returned: always
  type: dict
  contains:
    status:
      description: Whether the backup restored and verified; a failure also fails the task.
      type: str
      choices: [success, failure]
      returned: always
    name:
      description: >-
        Whose backup was drilled, the database's or the file set's name (until 1.0.0 also under C(database) or
        C(file_set), its key before).
      type: str
      returned: always
    source_type:
      description: What was drilled.
      type: str
      choices: [database, file_set]
      returned: always
    rto_s:
      description: Seconds from start to a verified restore.
      type: float
      returned: always
    rpo_s:
      description: Age in seconds of the backup restored.
      type: float
      returned: when a backup was found
    backup_id:
      description: The backup restored.
      type: str
      returned: when a backup was found
    tables:
      description: The verification after the restore.
      type: dict
      returned: on success of a database drill
    files:
      description:
        - The restored tree against the manifest - expected and found (files, symlinks, bytes), sample (how many
          content hashes the manifest recorded) and sample_differing (the files that differ).
      type: dict
      returned: when a file-set drill restored the backup
    scratch_dir:
      description: The scratch directory the file set was restored into (removed afterwards).
      type: str
      returned: with O(file_set)
    scratch_database:
      description: The scratch database the database was restored into (dropped afterwards).
      type: str
      returned: with O(db)
    leftovers_removed:
      description:
        - Scratch databases of earlier drills of this database that were killed before they could drop them
          (no live drill holds the drill's server-side lock); dropped now, and named in a warning.
      type: list
      elements: str
      returned: with O(db)
    durations:
      description: Seconds per phase.
      type: dict
      returned: always
    error:
      description: Why the drill failed.
      type: str
      returned: on failure
    s3_error:
      description:
        - Why O(s3) could not be listed; the drill then restored the newest local backup in O(backup_dir) (a
          warning says so).
      type: str
      returned: when S3 could not be listed
  sample:
    status: success
    rto_s: 41.7
    rpo_s: 3620.0
    backup_id: doctorq_full_20251107_020000
log: {description: "Timestamped log lines of the restore.", returned: always, type: list, elements: str}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.doctorq.backup.plugins.module_utils.ansible_glue import engine_errors, require_libs
from ansible_collections.doctorq.backup.plugins.module_utils.notify import notify_argument_spec
from ansible_collections.doctorq.backup.plugins.module_utils.drill import DrillJob, FilesDrillJob, run_drill, run_files_drill
from ansible_collections.doctorq.backup.plugins.module_utils.pg import postgres_argument_spec
from ansible_collections.doctorq.backup.plugins.module_utils.s3 import s3_argument_spec


def main() -> None:
    spec = postgres_argument_spec()
    spec.update(notify_argument_spec())
    spec.update(
        file_set=dict(type="str"),
        backup_dir=dict(type="path"),
        scratch_dir=dict(type="path"),
        report_dir=dict(type="path"),
        max_rpo_hours=dict(type="float", default=26.0),
        jobs=dict(type="int"),
        s3=s3_argument_spec(),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=False, mutually_exclusive=[("db", "file_set")],
                           required_one_of=[("db", "file_set")])
    params = module.params
    files = bool(params["file_set"])
    require_libs(module, postgres=not files, s3=bool(params["s3"]))
    with engine_errors(module):
        report = run_files_drill(FilesDrillJob.from_params(params)) if files else run_drill(DrillJob.from_params(params))
    log = report.pop("log")
    for warning in report.pop("warnings"):
        module.warn(warning)
    if report["status"] != "success":
        what = f"file set {params['file_set']}" if files else params["db"]
        module.fail_json(msg=f"restore drill of {what} failed: {report['error']}", report=report, log=log)
    module.exit_json(changed=True, report=report, log=log)


if __name__ == "__main__":
    main()
