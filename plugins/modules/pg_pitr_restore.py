#!/usr/bin/python
# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_pitr_restore
short_description: Point-in-time recovery of a whole PostgreSQL cluster from pgBackRest, into a scratch copy or live
version_added: 0.1.0
description:
  - Recovers the whole cluster of a pgBackRest stanza (see C(docs/pitr.md)) to a time, to the end of the archived WAL,
    to the end of a backup, to a named restore point, to a transaction ID or to a WAL location.
  - Into a scratch data directory served by a private server on another port (O(into=scratch), the default, and
    O(into=drill)), the live cluster untouched; or into the live cluster (O(into=live), with O(confirm) equal to O(stanza)).
  - When the live server answers, the run first seals the recoverable window (a commit and C(pgbackrest check)), so
    any time up to the run is a valid target. A target outside the recoverable window is refused before anything is
    touched.
  - A live recovery takes a safety incremental backup, stops the server, restores with C(--delta), starts it, waits
    for the promotion and verifies it. Every step is logged with a timestamp in
    C(restore_pgbackrest-<stanza>_<timestamp>.log) and an audit record is appended to C(restore_audit.jsonl) in
    O(log_dir); a webhook is notified.
  - With O(into=drill), it first measures its honest RPO before it commits or switches anything - what a disaster
    at that moment would lose, the age of the newest commit that reached the repository (0 when the live server
    committed nothing since) - then recovers to now into a scratch cluster, verifies it, measures RTO, writes a
    report and metrics, and removes the scratch cluster.
  - Replaces the C(pitr_*) options of M(doctorq.backup.pg_restore_safe), which still work there until 1.0.0 with a
    deprecation warning (C(pitr_target_time) is O(target.time), and so on).
  - The flat option spellings of before the grouping (C(target_time), C(scratch_dir), C(drill=true)...) are
    translated by the module's action plugin until 1.0.0, with a deprecation warning naming the new spelling.
extends_documentation_fragment:
  - doctorq.backup.common.pgbackrest_host
  - doctorq.backup.common
  - doctorq.backup.postgres
  - doctorq.backup.notify
  - doctorq.backup.pgbackrest
attributes:
  check_mode:
    description: Reads the repository, checks the target against the window and reports the plan; changes nothing.
options:
  db:
    description:
      - Not used - a recovery covers every database of the cluster (its few queries go to the C(postgres) database).
  log_dir:
    description:
      - Where the run log, the audit log and the lock go (the lock is shared with M(doctorq.backup.pgbackrest_backup)
        of the same stanza, so give both the same directory).
      - C(backup_dir) is its old name, read until 1.0.0 with a deprecation warning.
    type: path
    default: /var/lib/doctorq-backup/pgbackrest
    aliases: [backup_dir]
  confirm:
    description: With O(into=live), must equal O(stanza); anything else fails before any slow work and names what to type.
    type: str
    default: ''
  target:
    description:
      - What to recover to - exactly one of O(target.time), O(target.name), O(target.xid), O(target.lsn),
        O(target.immediate) or O(target.end). Each is checked before any work.
        Required unless O(into=drill) (a drill recovers to the end of the window).
      - Until 1.0.0 the flat spellings of before still work, with a deprecation warning - C(target=time) with
        C(target_time), C(target=name) with C(target_name), C(target=immediate), C(target=end), and C(backup_set).
    type: dict
    suboptions:
      time:
        description:
          - Recover to this time (ISO 8601; UTC when no offset is given) - the last transaction committed at or before
            it is the last one kept. Must lie inside the recoverable window
            (O(doctorq.backup.backup_info#module:stanza) shows it); otherwise the run fails and nothing is touched.
          - With O(into=drill), defaults to the end of the window (the newest archived transaction).
        type: str
      name:
        description: Recover to this restore point (made with C(pg_create_restore_point)).
        type: str
      xid:
        description:
          - Recover to the end of this transaction (a positive integer, as C(txid_current()) or C(pg_current_xact_id())
            shows it) - pgBackRest's C(--type=xid). Without O(target.backup_set) the recovery starts from the oldest
            backup on the newest timeline's line, which reaches every transaction of the window (the repository cannot
            tell when a transaction committed); name a newer backup that ended before the commit to replay less.
        type: str
      lsn:
        description:
          - Recover up to this WAL location (C(X/X) in hexadecimal, as C(pg_current_wal_lsn()) shows it) -
            pgBackRest's C(--type=lsn); starts from the newest backup that ended at or before it.
        type: str
      exclusive:
        description:
          - With O(target.time), O(target.xid) or O(target.lsn), stop just before the target instead of just after it
            (pgBackRest's C(--target-exclusive)) - an excluded O(target.xid) is not kept.
        type: bool
        default: false
      immediate:
        description:
          - Stop as soon as the backup (O(target.backup_set), default the newest) is consistent - the state of that
            backup.
        type: bool
      end:
        description: Replay all archived WAL.
        type: bool
      backup_set:
        description:
          - Recover from this pgBackRest backup set, by its id (pgBackRest's label, the C(id) of
            RV(doctorq.backup.backup_info#module:physical_backups)); by default the newest one that ended before the
            target on the newest timeline.
        type: str
  into:
    description:
      - V(scratch) restores into O(scratch.dir) and starts a private server there on O(scratch.port), with a unix
        socket in that directory only (no TCP), archiving off, and trust for local connections; the live cluster is
        not touched.
      - V(live) restores into the live data directory - needs O(confirm) equal to O(stanza).
      - V(drill) is a PITR drill - recover into a scratch cluster (to the end of the window unless O(target.time) says
        otherwise), verify, measure RTO and RPO (the exposure measured at its start, see RV(rpo_s)), write the report
        (O(drill.report_dir)) and C(doctorq_drill_pgbackrest_<stanza>.prom) metrics, then remove the scratch cluster.
        C(drill=true) is its old spelling, read until 1.0.0 with a deprecation warning.
    type: str
    choices: [scratch, live, drill]
    default: scratch
  live:
    description:
      - The live cluster. Until 1.0.0 the flat spellings C(data_dir), C(service) and C(safety_backup) still work, with a
        deprecation warning.
    type: dict
    suboptions:
      data_dir:
        description:
          - The live data directory; defaults to the stanza's C(pg1-path) in O(pgbackrest_config). A scratch recovery
            reads it too (the default O(scratch.dir), the PostgreSQL major).
        type: path
      service:
        description:
          - systemd unit of the live cluster (Debian - C(postgresql@15-main)), used to stop and start it. Without it
            C(pg_ctl -D <data dir>) is used, which needs C(postgresql.conf) in the data directory.
        type: str
      safety_backup:
        description:
          - Before a live recovery, take an incremental backup of the current state. A server that is down gets none
            (a warning says so); a running server this run cannot query stops the recovery before anything is touched.
        type: bool
        default: true
  scratch:
    description:
      - The scratch cluster of O(into=scratch) and O(into=drill). Until 1.0.0 the flat spellings C(scratch_dir),
        C(scratch_port) and C(keep_scratch) still work, with a deprecation warning.
    type: dict
    suboptions:
      dir:
        description: Scratch data directory; must be new or empty. Defaults to C(<live data directory>_pitr_scratch).
        type: path
      port:
        description: Port of the scratch server (its socket name); V(0) picks a free port.
        type: int
        default: 0
      keep:
        description: Leave the scratch server running after verification. Default true, false for a drill.
        type: bool
  drill:
    description:
      - Settings of O(into=drill). Until 1.0.0 the flat spellings C(max_rpo_seconds) and C(report_dir) still work, with
        a deprecation warning.
    type: dict
    suboptions:
      max_rpo_seconds:
        description:
          - The drill fails when its RPO (RV(rpo_s) - what a disaster at its start would lose, the age of the newest
            archived commit when newer ones exist) is more than this; V(0) disables the check.
          - Written as the metric C(doctorq_drill_rpo_limit_seconds) beside C(doctorq_drill_archive_lag_seconds), which
            the alert C(DoctorqPitrArchiveLagOverLimit) (C(monitoring/)) compares.
        type: int
        default: 900
      report_dir:
        description: Where the drill writes C(drill_pgbackrest-<stanza>.json).
        type: path
  timeout:
    description: Seconds to allow for the restore and for recovery to reach its target.
    type: int
    default: 3600
seealso:
  - module: doctorq.backup.backup_info
  - module: doctorq.backup.pgbackrest_backup
  - module: doctorq.backup.pg_restore_safe
"""

EXAMPLES = r"""
- name: Look at the cluster as it was at 10:42 - in a scratch cluster on another port, the live one untouched
  doctorq.backup.pg_pitr_restore:
    target:
      time: "2025-11-07T10:42:00Z"
    scratch:
      dir: /var/lib/postgresql/15/pitr-1042
  become: true

- name: Put the whole live cluster back to 10:42 (stops and starts it)
  doctorq.backup.pg_pitr_restore:
    target:
      time: "2025-11-07T10:42:00Z"
    into: live
    live:
      service: postgresql@15-main
    confirm: main
  become: true

- name: Recover to a restore point made before a migration, into a scratch cluster
  doctorq.backup.pg_pitr_restore:
    target:
      name: before_migration
  become: true

- name: Recover up to and including transaction 7395 (txid_current() inside it), into a scratch cluster
  doctorq.backup.pg_pitr_restore:
    target:
      xid: 7395
  become: true

- name: Recover everything before the WAL location of a bad migration, into a scratch cluster
  doctorq.backup.pg_pitr_restore:
    target:
      lsn: 0/7A000028
      exclusive: true
  become: true

- name: Look at the state of one backup (the safety backup of a live recovery, say)
  doctorq.backup.pg_pitr_restore:
    target:
      immediate: true
      backup_set: 20251107-104500F_20251107-110000I
  become: true

- name: PITR drill - recover to now into a scratch cluster, verify, report RTO/RPO, clean up
  doctorq.backup.pg_pitr_restore:
    into: drill
    drill:
      report_dir: /var/lib/doctorq-backup/drills
    notification:
      metrics_dir: /var/lib/node_exporter
  become: true
"""

RETURN = r"""
name:
  description: Whose cluster was recovered - the stanza's name (O(stanza)).
  returned: always
  type: str
source_type:
  description: What was recovered - a pgBackRest stanza, the whole cluster.
  returned: always
  type: str
  choices: [stanza]
stanza:
  description: RV(name) under its name before; deprecated, removed in 1.0.0.
  returned: always
  type: str
mode:
  description: V(scratch), V(live) or V(drill).
  returned: always
  type: str
plan:
  description: In check mode, what would be done (target, backup_set, window, directories, restore_options).
  returned: check mode
  type: dict
pitr:
  description:
    - The point-in-time recovery done (target, target_time, target_name, target_xid, target_lsn, target_exclusive, into,
      data_dir, backup_set - the id of the backup set used).
  returned: when the target was checked against the window
  type: dict
window:
  description: The recoverable window when the run started (start, end, oldest_backup and newest_backup - their ids).
  returned: when the repository was read
  type: dict
safety_backup:
  description: The id of the safety backup taken before a live recovery (what O(target.backup_set) takes).
  returned: with O(into=live), when the server was up and O(live.safety_backup) is true
  type: str
recovery:
  description:
    - The verification after recovery - in_recovery (false), recovery_point (the last transaction replayed, UTC),
      timeline, server_version, databases (name to number of tables).
  returned: success
  type: dict
scratch:
  description: The scratch cluster (data_dir, port, socket_dir, kept, connect, stop commands).
  returned: with O(into=scratch)
  type: dict
durations:
  description: Seconds per phase (exposure, seal, window, safety_backup, stop, restore, start, recovery, verify, cleanup).
  returned: always
  type: dict
duration_s:
  description: Seconds the whole run took.
  returned: always
  type: float
rto_s:
  description: Seconds from the start of the drill to a verified cluster.
  returned: with O(into=drill)
  type: float
rpo_s:
  description:
    - The drill's RPO in seconds - what a disaster at the drill's start would lose, measured before the drill commits
      or switches anything - the age of the newest commit in the archived WAL then (or of the newest backup's end
      when that is later), or V(0) when the live server had assigned no transaction ID since; null when neither an
      archived commit nor a usable backup was found (the drill fails).
    - The recovery point reached is C(recovery_point) in RV(recovery).
  returned: with O(into=drill)
  type: float
exposure:
  description:
    - How RV(rpo_s) was measured - measured_at (the drill's start), seconds (RV(rpo_s)), newest_archived_commit (UTC),
      newest_archived_xid, segment (the WAL segment holding it), newest_backup_end (UTC), age_seconds (the age of
      the later of the two), idle (true when nothing committed since that commit).
  returned: with O(into=drill)
  type: dict
report:
  description:
    - The drill report (also written to O(drill.report_dir)) - name (the stanza's), source_type (V(stanza)), host, at,
      status, error, backup_id (the id of the backup set used), recovery_point, pitr, window, recovery, rto_s, rpo_s,
      exposure, durations.
    - Until 1.0.0 also stanza (name) and kind (V(pitr)), its keys of before; deprecated, removed in 1.0.0.
  returned: with O(into=drill)
  type: dict
report_file:
  description: The drill report written.
  returned: with O(into=drill) and O(drill.report_dir)
  type: str
log:
  description: Timestamped log lines of every step of the recovery.
  returned: always
  type: list
  elements: str
log_file:
  description: Path of the run log, C(restore_pgbackrest-<stanza>_<YYYYmmdd_HHMMSS>.log) in O(log_dir).
  returned: when not in check mode
  type: str
"""

from ansible_collections.doctorq.backup.plugins.module_utils.ansible_glue import run_job
from ansible_collections.doctorq.backup.plugins.module_utils.pitr import run_pitr
from ansible_collections.doctorq.backup.plugins.module_utils.pitr_options import PitrJob, pitr_argument_spec


def main() -> None:
    run_job(dict(confirm=dict(type="str", default=""), **pitr_argument_spec()), PitrJob.from_params, run_pitr, s3=False,
            pgbackrest=True)


if __name__ == "__main__":
    main()
