# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Docs of the options both restores (pg_restore_safe, files_restore) share; each module sets O(backup_dir)'s default.

Edit together with module_utils/restore.py:restore_argument_spec,
module_utils/files_restore_job.py:files_restore_argument_spec and, for
``archive``, module_utils/restore_source.py:archive_argument_spec.
"""

from __future__ import annotations


class ModuleDocFragment:  # pylint: disable=too-few-public-methods
    DOCUMENTATION = r"""
options:
  before:
    description: With O(source=latest), only backups started before this time (ISO 8601, UTC when no offset is given).
    type: str
  backup_dir:
    description: Local backup directory; also where the run log, the audit log and (by default) safety backups go.
    type: path
  safety:
    description:
      - The safety backup of what the restore replaces, taken before anything is replaced.
      - Until 1.0.0 also read flat, as C(safety_backup) and C(safety_dir), with a deprecation warning.
    type: dict
    suboptions:
      backup:
        description:
          - Back up the existing target - the database, or the non-empty directory - before replacing it.
          - Required by M(doctorq.backup.pg_restore_safe)'s O(doctorq.backup.pg_restore_safe#module:mode=replace).
        type: bool
        default: true
      dir:
        description: Where safety backups go; defaults to C(<backup_dir>/safety). They are kept until you delete them.
        type: path
  archive:
    description:
      - How to bring back a backup whose data object is in GLACIER or DEEP_ARCHIVE.
      - The run asks S3 to restore the object, then waits up to O(archive.wait_timeout) or returns C(pending=true)
        telling when to run again. Running again is safe - no second request is made while one is in progress, and
        nothing is changed before the object is readable.
      - Until 1.0.0 the suboptions are also read flat, as the options they were (C(archive_tier), C(archive_days),
        C(wait_timeout), C(poll_interval)), with a deprecation warning.
    type: dict
    suboptions:
      tier:
        description:
          - Retrieval tier (usually 1-5 minutes for V(Expedited), 3-5 hours for V(Standard), 5-12 hours for V(Bulk);
            up to 12 and 48 hours from DEEP_ARCHIVE).
        type: str
        choices: [Expedited, Standard, Bulk]
        default: Standard
      days:
        description: Days the restored copy of an archived object stays readable.
        type: int
        default: 1
      wait_timeout:
        description: Seconds to wait for an archive restore; V(0) returns C(pending) at once.
        type: int
        default: 0
      poll_interval:
        description: Seconds between checks while waiting for an archive restore.
        type: int
        default: 30
"""
