# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Docs of the pgBackRest options; edit together with module_utils/pgbackrest.py:pgbackrest_argument_spec."""

from __future__ import annotations


class ModuleDocFragment:  # pylint: disable=too-few-public-methods
    DOCUMENTATION = r"""
options:
  stanza:
    description:
      - The pgBackRest stanza (the cluster as pgBackRest names it), as configured by the C(doctorq.backup.pgbackrest) role.
    type: str
    default: main
  pgbackrest_config:
    description:
      - The pgBackRest configuration file. It defines the S3 repository (and holds its credentials, 0640, owned by
        O(pgbackrest_user)) and the stanza's data directory and port.
    type: path
    default: /etc/pgbackrest/pgbackrest.conf
  pgbackrest_user:
    description:
      - The database OS user pgBackRest (and, for a recovery, pg_ctl, pg_controldata and psql) runs as. The module
        switches to it with C(setpriv) when it runs as root (C(become=true)), and runs directly when it already runs
        as this user.
    type: str
    default: postgres
notes:
  - pgBackRest talks to S3 over TLS only; S3-compatible servers need an https endpoint.
"""
