#!/usr/bin/python
# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pgbackrest_backup
short_description: Physical backup of a whole PostgreSQL cluster with pgBackRest - full, differential or incremental
version_added: 0.1.0
description:
  - Takes one physical backup of the whole cluster of a pgBackRest stanza (C(pgbackrest backup --type=full|diff|incr)),
    as configured by the C(doctorq.backup.pgbackrest) role, into the repository of O(pgbackrest_config) (see
    C(docs/pitr.md)).
  - The same run frame as the logical backups - a timestamped run log in O(log_dir), a lock so two backups of one
    stanza never overlap, a webhook and a Prometheus textfile (C(doctorq_backup_pgbackrest_<stanza>_<kind>.prom)).
  - A differential or incremental backup without a full one before it becomes a full one (pgBackRest's rule); the
    log says so and RV(backup.kind) is what was made.
  - pgBackRest applies its own retention after the backup (the recoverable window); what it expired is RV(deleted).
  - The scheduled job on the host (C(doctorq-pgbackrest backup --kind ...)) runs the same code.
  - Replaces the physical kinds of M(doctorq.backup.pg_backup) (C(kind=physical_full|differential|incremental)),
    which still work there until 1.0.0 with a deprecation warning.
extends_documentation_fragment:
  - doctorq.backup.common.pgbackrest_host
  - doctorq.backup.common
  - doctorq.backup.notify
  - doctorq.backup.pgbackrest
attributes:
  check_mode:
    description:
      - Checks that the stanza is healthy and reports which backup would be made on top of which; writes nothing.
options:
  kind:
    description:
      - V(physical_full), V(differential) or V(incremental) - pgBackRest's C(full), C(diff) and C(incr).
    type: str
    choices: [physical_full, differential, incremental]
    default: incremental
  log_dir:
    description:
      - Directory of the run logs (C(backup_pgbackrest-<stanza>_<timestamp>.log)) and of the lock of the stanza's
        pgBackRest jobs. Created (0700) if missing. The backup itself goes to pgBackRest's repository.
      - The same default as C(doctorq-pgbackrest) and M(doctorq.backup.pg_pitr_restore), so a backup and a recovery
        of one stanza share their lock.
      - The alias O(backup_dir) is deprecated and will be removed in 1.0.0.
    type: path
    default: /var/lib/doctorq-backup/pgbackrest
    aliases: [backup_dir]
seealso:
  - module: doctorq.backup.backup_info
  - module: doctorq.backup.pg_pitr_restore
  - module: doctorq.backup.pg_backup
"""

EXAMPLES = r"""
- name: Incremental physical backup of the cluster with pgBackRest (stanza main)
  doctorq.backup.pgbackrest_backup:
    kind: incremental
    stanza: main
  become: true

- name: Weekly full backup, notified to Slack, with node_exporter metrics
  doctorq.backup.pgbackrest_backup:
    kind: physical_full
    notification:
      webhook_url: "{{ vault_slack_webhook }}"
      metrics_dir: /var/lib/node_exporter/textfile_collector
  become: true

- name: See which backup would be made on top of which
  doctorq.backup.pgbackrest_backup:
    kind: differential
  become: true
  check_mode: true
"""

RETURN = r"""
backup:
  description: Facts of the backup made.
  returned: success
  type: dict
  contains:
    id:
      description: The pgBackRest backup label (also RV(backup.label)).
      type: str
      returned: always
    label:
      description: pgBackRest backup label.
      type: str
      returned: always
    kind:
      description: Kind made.
      type: str
      choices: [physical_full, differential, incremental]
      returned: always
    requested_kind:
      description: O(kind) as asked; differs from RV(backup.kind) when there was no full backup to build on.
      type: str
      returned: always
    type:
      description: pgBackRest's type of the backup made.
      type: str
      choices: [full, diff, incr]
      returned: always
    stanza:
      description: The stanza backed up.
      type: str
      returned: always
    prior:
      description: Label of the backup this one is based on (null for a full).
      type: str
      returned: always
    started_at:
      description: When the backup started (ISO 8601, UTC).
      type: str
      returned: always
    finished_at:
      description: When the backup ended (ISO 8601, UTC); the cluster is recoverable from one second after it.
      type: str
      returned: always
    duration_s:
      description: Seconds the backup took, as pgBackRest recorded it.
      type: float
      returned: always
    size:
      description: Bytes this backup added to the repository (RV(backup.repo_delta)).
      type: int
      returned: always
    database_size:
      description: Bytes of the cluster.
      type: int
      returned: always
    delta:
      description: Bytes of the cluster this backup copied.
      type: int
      returned: always
    repo_size:
      description: Bytes of this backup in the repository, with the files it shares with earlier ones.
      type: int
      returned: always
    repo_delta:
      description: Bytes this backup added to the repository.
      type: int
      returned: always
    wal_start:
      description: First WAL segment the backup needs.
      type: str
      returned: always
    wal_stop:
      description: Last WAL segment the backup needs.
      type: str
      returned: always
    lsn_start:
      description: LSN at the start of the backup.
      type: str
      returned: always
    lsn_stop:
      description: LSN at the end of the backup.
      type: str
      returned: always
    s3_uri:
      description: URI of the backup in the repository, null when the repository is not in S3.
      type: str
      returned: always
  sample:
    id: 20251107-010002F_20251107-070001I
    label: 20251107-010002F_20251107-070001I
    kind: incremental
    type: incr
    prior: 20251107-010002F
    size: 18231040
    s3_uri: s3://doctorq-backups/pgbackrest/db1/backup/main/20251107-010002F_20251107-070001I
deleted:
  description: Backups pgBackRest expired by retention after this one (C(id) the label, C(kind) V(physical), C(location)).
  returned: success
  type: list
  elements: dict
plan:
  description:
    - In check mode, what a run would do - C(stanza), C(kind), C(type) (the pgBackRest type it would run, V(full)
      when there is no full backup yet), C(prior) (the newest usable backup), C(repository) and C(backups) (how many
      usable ones there are).
  returned: check mode
  type: dict
log:
  description: The run's log lines - the stanza's check, the backup and pgBackRest's expiry.
  returned: always
  type: list
  elements: str
log_file:
  description: Path of the run log, C(backup_pgbackrest-<stanza>_<YYYYmmdd_HHMMSS>.log) in O(log_dir).
  returned: when not in check mode
  type: str
"""

from ansible_collections.doctorq.backup.plugins.module_utils.ansible_glue import run_job
from ansible_collections.doctorq.backup.plugins.module_utils.notify import notify_argument_spec
from ansible_collections.doctorq.backup.plugins.module_utils.pgbackrest import log_dir_argument_spec, pgbackrest_argument_spec
from ansible_collections.doctorq.backup.plugins.module_utils.pgbackrest_info import KINDS
from ansible_collections.doctorq.backup.plugins.module_utils.physical_backup import PhysicalBackupJob, run_physical_backup


def options() -> dict:
    """The module's whole argument spec: no connection options, no s3 (the repository is pgBackRest's)."""
    return dict(kind=dict(type="str", default="incremental", choices=list(KINDS)), **log_dir_argument_spec(),
                **pgbackrest_argument_spec(), **notify_argument_spec())


def main() -> None:
    run_job(options(), PhysicalBackupJob.from_params, run_physical_backup, postgres=False, s3=False)


if __name__ == "__main__":
    main()
