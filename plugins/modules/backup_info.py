#!/usr/bin/python
# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: backup_info
short_description: List complete PostgreSQL and file backups on disk and in S3, and re-verify them
version_added: 0.1.0
description:
  - Lists the backups written by M(doctorq.backup.pg_backup) and M(doctorq.backup.files_backup), newest first, from
    their manifests. Backups without a manifest (interrupted runs) or whose data file is missing or of the wrong size
    are never listed.
  - When O(s3) cannot be listed (unreachable, credentials refused, no such bucket), the backups in O(backup_dir) are
    listed all the same, with a warning and RV(s3_error) saying why; with no O(backup_dir) the module fails.
  - With O(verify=true), re-reads each listed backup and compares its size, SHA-256 and MD5 with the manifest.
    Objects in an archive tier (GLACIER, DEEP_ARCHIVE) are reported as C(archived) instead.
  - With O(stanza), also lists the physical (pgBackRest) backups of that stanza and the recoverable window of
    point-in-time recovery, from C(pgbackrest info --output=json) and the newest commit in the archived WAL. This
    needs root (C(become)) or the O(pgbackrest_user).
extends_documentation_fragment:
  - doctorq.backup.common
  - doctorq.backup.s3
attributes:
  check_mode:
    description: The module only reads.
options:
  name:
    description:
      - Only backups of this database or file set (RV(backups[].name)).
      - Until 1.0.0 also read as C(db), its name before, with a deprecation warning.
    type: str
  source_type:
    description:
      - Only database backups, only file-set backups (M(doctorq.backup.files_backup)), or both (RV(backups[].source_type)).
      - Until 1.0.0 also read as C(type), its name before (with C(files) for V(file_set)), with a deprecation warning.
    type: str
    choices: [database, file_set, all]
    default: all
  backup_dir:
    description: Local backup directory to list. Omit to list S3 only.
    type: path
  kind:
    description: Only daily or only weekly backups.
    type: str
    choices: [daily, weekly, all]
    default: all
  limit:
    description: At most this many backups (the newest); V(0) lists all.
    type: int
    default: 0
  verify:
    description: Re-hash each listed backup and compare with its manifest.
    type: bool
    default: false
  stanza:
    description: pgBackRest stanza whose physical backups and recoverable window to list; omit for logical backups only.
    type: str
  pgbackrest_config:
    description: The pgBackRest configuration file.
    type: path
    default: /etc/pgbackrest/pgbackrest.conf
  pgbackrest_user:
    description: The database OS user pgBackRest runs as.
    type: str
    default: postgres
  pg_bin_dir:
    description: Where C(pg_waldump) is; defaults to the PostgreSQL version of the stanza under C(/usr/lib/postgresql).
    type: path
"""

EXAMPLES = r"""
- name: Newest backups of doctorq, on disk and in S3
  doctorq.backup.backup_info:
    name: doctorq
    backup_dir: /var/backups/doctorq/database
    s3:
      bucket: doctorq-backups
      prefix: "doctorq/{{ inventory_hostname }}"
    limit: 5
  register: backups

- name: Physical backups and the point-in-time recovery window of stanza main
  doctorq.backup.backup_info:
    stanza: main
  become: true
  register: physical

- name: Re-verify every local backup
  doctorq.backup.backup_info:
    backup_dir: /var/backups/doctorq/database
    verify: true
  register: verified
  failed_when: verified.corrupt | length > 0
"""

RETURN = r"""
backups:
  description: Complete backups, newest first.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: Backup id.
      type: str
      returned: always
    name:
      description: Whose backup it is - the database's or the file set's name.
      type: str
      returned: always
    source_type:
      description: What it was taken of.
      type: str
      choices: [database, file_set]
      returned: always
    contents:
      description: "For file-set backups: root, paths, count, files, bytes, changed_during_backup."
      type: dict
      returned: for file-set backups
    database:
      description: RV(backups[].name) under its name before; deprecated, removed in 1.0.0.
      type: str
      returned: always
    type:
      description: RV(backups[].source_type) under its name before (C(files) for V(file_set)); deprecated, removed in 1.0.0.
      type: str
      returned: always
    fileset:
      description: RV(backups[].contents) under its name before; deprecated, removed in 1.0.0.
      type: dict
      returned: for file-set backups
    kind:
      description: C(daily) or C(weekly).
      type: str
      returned: always
    location:
      description: Where this copy of the backup is - the local directory or S3.
      type: str
      choices: [local, s3]
      returned: always
    origin:
      description: Path or S3 key of the manifest.
      type: str
      returned: always
    started_at:
      description: "Start of the backup (UTC, ISO 8601)."
      type: str
      returned: always
    size:
      description: Bytes.
      type: int
      returned: always
    sha256:
      description: SHA-256 of the backup file.
      type: str
      returned: always
    storage_class:
      description: S3 storage class of the data object.
      type: str
      returned: for S3 backups
    verification:
      description: "C(ok), C(state) (verified, corrupt, archived) and a message."
      type: dict
      returned: with O(verify=true)
corrupt:
  description: Ids of backups whose checksums did not match (with O(verify=true)).
  returned: always
  type: list
  elements: str
s3_error:
  description:
    - Why O(s3) could not be listed (unreachable, credentials refused, no such bucket). The local backups in
      O(backup_dir) are listed all the same, and a warning says so; without O(backup_dir) the module fails instead.
  returned: when S3 could not be listed
  type: str
physical_backups:
  description:
    - pgBackRest backups of O(stanza), newest first.
    - Each with the facts M(doctorq.backup.pgbackrest_backup) returns of the backup it makes
      (RV(doctorq.backup.pgbackrest_backup#module:backup)) - C(id) (pgBackRest's label, the
      O(doctorq.backup.pg_pitr_restore#module:target.backup_set) value), C(level) (V(full), V(diff) or V(incr)),
      C(prior), C(started_at), C(finished_at), C(duration_s), C(database_size), C(delta), C(repo_size),
      C(repo_delta), C(wal_start), C(wal_stop), C(lsn_start), C(lsn_stop), C(error) - and C(timeline) and
      C(on_latest_timeline) (whether a recovery to the end of the window can start from it).
    - Until 1.0.0 each also holds C(label) (C(id)), C(kind) (C(level) as V(physical_full), V(differential) or
      V(incremental)) and C(type) (C(level)), the keys of before; deprecated, removed in 1.0.0.
  returned: with O(stanza)
  type: list
  elements: dict
  sample:
    - {id: 20251109-060002F_20251109-063001I, level: incr, prior: 20251109-060002F,
       started_at: "2025-11-09T06:30:01Z", finished_at: "2025-11-09T06:30:40Z", repo_delta: 18231040, timeline: 1,
       on_latest_timeline: true}
recoverable_window:
  description:
    - Times a point-in-time recovery can reach - from just after the oldest backup ended to the newest transaction
      commit in the archived WAL (UTC, ISO 8601). C(end) is null when no commit is found in the newest WAL.
  returned: with O(stanza)
  type: dict
  sample: {start: "2025-11-02T01:00:41Z", end: "2025-11-09T10:41:58.120331Z", oldest_backup: 20251102-010002F,
           newest_backup: 20251109-060002F_20251109-063001I, seconds: 639077.1}
stanza_status:
  description: pgBackRest's status of the stanza (code, message), PostgreSQL version and the archived WAL range.
  returned: with O(stanza)
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.doctorq.backup.plugins.module_utils.ansible_glue import engine_errors, require_libs
from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError
from ansible_collections.doctorq.backup.plugins.module_utils.listing import (
    ignored, list_reachable, s3_unavailable, store_for, stores, verify,
)
from ansible_collections.doctorq.backup.plugins.module_utils.pgbackrest import DEFAULT_CONFIG, PgBackRest
from ansible_collections.doctorq.backup.plugins.module_utils.pitr_window import physical_listing
from ansible_collections.doctorq.backup.plugins.module_utils.s3 import S3Config, s3_argument_spec


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str"),
            backup_dir=dict(type="path"),
            kind=dict(type="str", default="all", choices=["daily", "weekly", "all"]),
            source_type=dict(type="str", default="all", choices=["database", "file_set", "all"]),
            limit=dict(type="int", default=0),
            verify=dict(type="bool", default=False),
            s3=s3_argument_spec(),
            stanza=dict(type="str"),
            pgbackrest_config=dict(type="path", default=DEFAULT_CONFIG),
            pgbackrest_user=dict(type="str", default="postgres"),
            pg_bin_dir=dict(type="path"),
        ),
        required_one_of=[("backup_dir", "s3", "stanza")],
        supports_check_mode=True,
    )
    require_libs(module, postgres=False, s3=bool(module.params["s3"]))
    params = module.params
    with engine_errors(module):
        if params["limit"] < 0:
            raise ConfigError("limit must be 0 (all) or a positive number.")
        candidates = stores(params["backup_dir"], S3Config.from_params(params["s3"]))
        source_type = None if params["source_type"] == "all" else params["source_type"]
        listed, s3_error = list_reachable(candidates, params["name"], source_type)
        if s3_error:  # the local backups are listed all the same: S3 down is when they matter most
            module.warn(s3_unavailable(s3_error, params["backup_dir"]))
        for warning in ignored(candidates):
            module.warn(warning)
        manifests = [m for m in listed if params["kind"] in ("all", m.kind)]
        if params["limit"]:
            manifests = manifests[:params["limit"]]
        backups, corrupt = [], []
        for manifest in manifests:
            entry = manifest.summary()
            if manifest.s3:
                entry["storage_class"] = manifest.s3.get("storage_class")
            if params["verify"]:
                entry["verification"] = verify(manifest, store_for(manifest, candidates))
                if entry["verification"]["ok"] is False:
                    corrupt.append(manifest.id)
            backups.append(entry)
        physical = {}
        if params["stanza"]:
            physical = physical_listing(PgBackRest(params["pgbackrest_config"], params["stanza"], params["pgbackrest_user"]),
                                        bin_dir=params["pg_bin_dir"])
    module.exit_json(changed=False, backups=backups, corrupt=corrupt, **({"s3_error": s3_error} if s3_error else {}),
                     **physical)


if __name__ == "__main__":
    main()
