# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every module of the collection says about itself: its author, no diff, and where it runs.

``DOCUMENTATION`` runs a PostgreSQL client (on a database host, or any host
that reaches the server). The variants only say what differs, and come before
it in ``extends_documentation_fragment`` (the first fragment listed wins):
``doctorq.backup.common.pgbackrest_host`` (pgBackRest, on the database host; not
``.pgbackrest``, which would load the pgbackrest fragment) and
``doctorq.backup.common.files`` (a file set, with GNU tar). Each module says
what its ``check_mode`` does (restore_drill: none), and overrides what else differs (s3_lifecycle).
"""

from __future__ import annotations


class ModuleDocFragment:  # pylint: disable=too-few-public-methods
    DOCUMENTATION = r"""
author:
  - DoctorQ infrastructure team (@doctorq-infra)
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
    description: There is no before and after to show.
  platform:
    support: full
    platforms: posix
    description: Runs on the database host (or any host that reaches the server), with the PostgreSQL client programs.
"""

    PGBACKREST_HOST = r"""
attributes:
  platform:
    description: Runs on the database host, as root (C(become=true)) or as O(pgbackrest_user).
"""

    FILES = r"""
attributes:
  diff_mode:
    description: No diff is produced; the result and the run log say what was written.
  platform:
    description: Linux hosts with GNU tar (Debian's tar package) and zstd or gzip.
"""
