#!/usr/bin/python
# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_restore_drill
short_description: Prove that the newest backup of a PostgreSQL database restores, and measure RTO and RPO
version_added: 0.1.0
description:
  - Restores the newest complete backup of O(db) (on disk or in S3) into a scratch database
    C(<db>__drill_<timestamp>) through the same engine as M(doctorq.backup.pg_restore_safe), so checksums are verified
    before the restore and every table of the manifest is checked after it.
  - Reports RTO (seconds to a verified restore) and RPO (age of the newest restorable backup), writes a JSON report
    and Prometheus metrics, notifies on failure, and drops the scratch database. It never touches O(db) itself.
  - The drill fails when the restore fails or when the newest backup is older than O(max_rpo_hours).
author:
  - DoctorQ infrastructure team (@doctorq-infra)
extends_documentation_fragment:
  - doctorq.backup.postgres
  - doctorq.backup.s3
  - doctorq.backup.notify
attributes:
  check_mode:
    support: none
    description: A drill is a real restore into a scratch database; there is nothing to predict.
  diff_mode:
    support: none
    description: There is no before and after to show.
  platform:
    support: full
    platforms: posix
    description: Runs on the database host (or any host that reaches the server), with the PostgreSQL client programs.
options:
  db:
    description: Database whose newest backup is drilled.
    required: true
  backup_dir:
    description: Local backup directory (searched for backups; the restore's log and audit go there).
    type: path
    default: /var/backups/postgresql
  report_dir:
    description: Directory of the JSON report C(drill_<db>.json). Omit to write none.
    type: path
  max_rpo_hours:
    description: Fail the drill when the newest restorable backup is older than this.
    type: float
    default: 26.0
  jobs:
    description: Parallel C(pg_restore) jobs (see M(doctorq.backup.pg_restore_safe)); V(1) streams, V(0) means one per core.
    type: int
    default: 1
  notify_on:
    default: failure
seealso:
  - module: doctorq.backup.pg_restore_safe
"""

EXAMPLES = r"""
- name: Drill the newest backup of doctorq
  doctorq.backup.pg_restore_drill:
    db: doctorq
    backup_dir: /var/backups/doctorq/database
    report_dir: /var/lib/doctorq-backup/drills
    metrics_dir: /var/lib/prometheus/node-exporter
  register: drill

- name: Show RTO and RPO
  ansible.builtin.debug:
    msg: "{{ drill.report.rto_s }} s to restore; the backup was {{ drill.report.rpo_s }} s old"
"""

RETURN = r"""
report:
  description: The drill report (also written to O(report_dir)).
  returned: always
  type: dict
  contains:
    status:
      description: C(success) or C(failure).
      type: str
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
      returned: on success
    durations:
      description: Seconds per phase.
      type: dict
      returned: always
    error:
      description: Why the drill failed.
      type: str
      returned: on failure
  sample:
    status: success
    rto_s: 41.7
    rpo_s: 3620.0
    backup_id: doctorq_full_20251107_020000
log:
  description: Timestamped log lines of the restore.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.doctorq.backup.plugins.module_utils.ansible_glue import engine_errors, require_libs
from ansible_collections.doctorq.backup.plugins.module_utils.backup import Notifier, notify_argument_spec
from ansible_collections.doctorq.backup.plugins.module_utils.drill import DrillJob, run_drill
from ansible_collections.doctorq.backup.plugins.module_utils.pg import PgConn, postgres_argument_spec
from ansible_collections.doctorq.backup.plugins.module_utils.s3 import S3Config, s3_argument_spec


def main() -> None:
    spec = postgres_argument_spec()
    spec.update(notify_argument_spec())
    spec.update(
        db=dict(spec["db"], required=True),
        backup_dir=dict(type="path", default="/var/backups/postgresql"),
        report_dir=dict(type="path"),
        max_rpo_hours=dict(type="float", default=26.0),
        jobs=dict(type="int", default=1),
        s3=s3_argument_spec(),
    )
    spec["notify_on"] = dict(spec["notify_on"], default="failure")
    module = AnsibleModule(argument_spec=spec, supports_check_mode=False)
    require_libs(module, s3=bool(module.params["s3"]))
    params = module.params
    with engine_errors(module):
        job = DrillJob(conn=PgConn.from_params(params), db=params["db"], backup_dir=params["backup_dir"],
                       s3=S3Config.from_params(params["s3"]), report_dir=params["report_dir"], jobs=params["jobs"],
                       max_rpo_hours=params["max_rpo_hours"], notifier=Notifier.from_params(params))
        report = run_drill(job)
    log = report.pop("log")
    for warning in report.pop("warnings"):
        module.warn(warning)
    if report["status"] != "success":
        module.fail_json(msg=f"restore drill of {params['db']} failed: {report['error']}", report=report, log=log)
    module.exit_json(changed=True, report=report, log=log)


if __name__ == "__main__":
    main()
