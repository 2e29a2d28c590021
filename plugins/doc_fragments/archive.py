# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Docs of the archive option of every restore; edit together with module_utils/restore_source.py:archive_argument_spec."""

from __future__ import annotations


class ModuleDocFragment:  # pylint: disable=too-few-public-methods
    DOCUMENTATION = r"""
options:
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
