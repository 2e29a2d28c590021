# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Docs of the options both restores (pg_restore_safe, files_restore) share; each module sets O(backup_dir)'s default.

Edit together with module_utils/restore.py:restore_argument_spec and
module_utils/files_restore_job.py:files_restore_argument_spec.
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
  safety_dir:
    description: Where safety backups go; defaults to C(<backup_dir>/safety). They are kept until you delete them.
    type: path
"""
