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
    stanza never overlap, a webhook and a Prometheus textfile (C(doctorq_backup_pgbackrest_<stanza>_<kind>.prom),
    the level in its words of before - C(physical_full), C(differential), C(incremental) - as the metrics' label).
  - A differential or incremental backup without a full one before it becomes a full one (pgBackRest's rule); the
    log says so and RV(backup.level) is what was made.
  - pgBackRest applies its own retention after the backup (the recoverable window); what it expired is RV(deleted).
  - The scheduled job on the host (C(doctorq-pgbackrest backup --level ...)) runs the same code.
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
  level:
    description:
      - The backup's level, in pgBackRest's words - V(full), V(diff) (differential - what changed since the last
        full backup) or V(incr) (incremental - what changed since the last backup of any level).
      - Until 1.0.0 also read as C(kind), its name before, with its values of before (C(physical_full),
        C(differential), C(incremental)) and a deprecation warning.
    type: str
    choices: [full, diff, incr]
    default: incr
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
    level: incr
    stanza: main
  become: true

- name: Weekly full backup, notified to Slack, with node_exporter metrics
  doctorq.backup.pgbackrest_backup:
    level: full
    notification:
      webhook_url: "{{ vault_slack_webhook }}"
      metrics_dir: /var/lib/node_exporter/textfile_collector
  become: true

- name: See which backup would be made on top of which
  doctorq.backup.pgbackrest_backup:
    level: diff
  become: true
  check_mode: true
"""

RETURN = r"""
backup:
  description:
    - Facts of the backup made, as M(doctorq.backup.backup_info) lists each backup of the stanza
      (RV(doctorq.backup.backup_info#module:physical_backups)), and whose backup it is.
  returned: success
  type: dict
  contains:
    id:
      description:
        - The backup set's id, pgBackRest's label - what O(doctorq.backup.pg_pitr_restore#module:target.backup_set)
          takes.
      type: str
      returned: always
    level:
      description: The level made, V(full) when O(level) asked for another one and there was no full backup to build on.
      type: str
      choices: [full, diff, incr]
      returned: always
    requested_level:
      description: O(level) as asked.
      type: str
      choices: [full, diff, incr]
      returned: always
    name:
      description: Whose backup it is - the stanza's name (O(stanza)).
      type: str
      returned: always
    source_type:
      description: What the backup was taken of - a pgBackRest stanza, the whole cluster.
      type: str
      choices: [stanza]
      returned: always
    label:
      description: RV(backup.id) under its name before; deprecated, removed in 1.0.0.
      type: str
      returned: always
    type:
      description: RV(backup.level) under its name before; deprecated, removed in 1.0.0.
      type: str
      choices: [full, diff, incr]
      returned: always
    kind:
      description: RV(backup.level) in its words of before, under its name before; deprecated, removed in 1.0.0.
      type: str
      choices: [physical_full, differential, incremental]
      returned: always
    requested_kind:
      description: RV(backup.requested_level) in its words of before, under its name before; deprecated, removed in 1.0.0.
      type: str
      choices: [physical_full, differential, incremental]
      returned: always
    stanza:
      description: RV(backup.name) under its name before; deprecated, removed in 1.0.0.
      type: str
      returned: always
    prior:
      description: The id of the backup this one is based on (null for a full).
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
      description:
        - Bytes this backup added to the repository (C(repo_delta)), what the run's metrics and webhook say.
        - Of the cluster, C(database_size) is its size and C(delta) what this backup copied of it; in the repository,
          C(repo_size) is this backup's size with the files it shares with earlier ones and C(repo_delta) what it
          added.
      type: int
      returned: always
    wal_start:
      description: First WAL segment the backup needs (C(wal_stop) the last one, C(lsn_start) and C(lsn_stop) its LSNs).
      type: str
      returned: always
    s3_uri:
      description: URI of the backup in the repository, null when the repository is not in S3.
      type: str
      returned: always
  sample:
    id: 20251107-010002F_20251107-070001I
    level: incr
    requested_level: incr
    name: main
    source_type: stanza
    prior: 20251107-010002F
    size: 18231040
    database_size: 2462842880
    delta: 41943040
    repo_size: 312475648
    repo_delta: 18231040
    wal_start: 000000010000000000000041
    wal_stop: 000000010000000000000041
    lsn_start: 0/41000028
    lsn_stop: 0/41000138
    s3_uri: s3://doctorq-backups/pgbackrest/db1/backup/main/20251107-010002F_20251107-070001I
deleted:
  description:
    - Backups pgBackRest expired by retention after this one - C(id), C(level) and C(location).
    - Until 1.0.0 each also says C(kind) V(physical), its key of before; deprecated, removed in 1.0.0.
  returned: success
  type: list
  elements: dict
plan:
  description:
    - In check mode, what a run would do - C(name) and C(source_type) (V(stanza)), C(level) (the level it would run,
      V(full) when there is no full backup yet), C(requested_level) (O(level)), C(prior) (the newest usable backup),
      C(repository) and C(backups) (how many usable ones there are).
    - Until 1.0.0 also C(stanza), C(kind) (O(level) as C(physical_full), C(differential) or C(incremental)) and C(type)
      (C(level)), the keys of before; deprecated, removed in 1.0.0.
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

from ansible_collections.doctorq.backup.plugins.module_utils.ansible_glue import module_spec, run_job
from ansible_collections.doctorq.backup.plugins.module_utils.pgbackrest_info import LEVELS
from ansible_collections.doctorq.backup.plugins.module_utils.physical_backup import PhysicalBackupJob, run_physical_backup


OWN = dict(level=dict(type="str", default="incr", choices=list(LEVELS)))
# a pgBackRest job's options; no connection options, no s3 (the repository is pgBackRest's)
SPEC = dict(postgres=False, s3=False, pgbackrest=True)


def options() -> dict:
    """The module's whole argument spec."""
    return module_spec(OWN, **SPEC)


def main() -> None:
    run_job(OWN, PhysicalBackupJob.from_params, run_physical_backup, **SPEC)


if __name__ == "__main__":
    main()
