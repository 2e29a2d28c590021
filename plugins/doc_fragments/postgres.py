# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Docs of the PostgreSQL connection options; edit together with module_utils/pg.py:postgres_argument_spec."""

from __future__ import annotations


class ModuleDocFragment:  # pylint: disable=too-few-public-methods
    DOCUMENTATION = r"""
options:
  login_host:
    description:
      - Host of the PostgreSQL server. Empty means the local Unix socket.
    type: str
    default: ''
    aliases: [host]
  login_port:
    description: Port of the PostgreSQL server.
    type: int
    default: 5432
    aliases: [port]
  login_user:
    description: Role to connect as. Backups need a role that can read every object (a superuser or V(pg_read_all_data)).
    type: str
    default: postgres
    aliases: [login]
  login_password:
    description:
      - Password of O(login_user). Passed to the client programs through a 0600 passfile in a private
        temporary directory, never on their command line; never logged or returned.
    type: str
    default: ''
  login_unix_socket:
    description: Directory of the server's Unix socket; takes precedence over O(login_host).
    type: str
    default: ''
    aliases: [unix_socket]
  db:
    description: Name of the database.
    type: str
    aliases: [login_db]
  ssl_mode:
    description: libpq C(sslmode) of the connection.
    type: str
    default: prefer
    choices: [allow, disable, prefer, require, verify-ca, verify-full]
  ca_cert:
    description: CA certificate file to verify the server with (libpq C(sslrootcert)).
    type: path
    aliases: [ssl_rootcert]
  connect_timeout:
    description:
      - Seconds to wait for a connection, the whole exchange up to the login included, at least 1.
      - libpq applies it to each address the host name resolves to (and each host of a list), so a server that accepts
        connections and never answers fails the run within that many seconds per address.
    type: int
    default: 10
  pg_bin_dir:
    description:
      - Directory of the PostgreSQL client programs (C(pg_dump), C(pg_restore), C(pg_dumpall)).
      - By default the programs of the server's major version are taken from C(/usr/lib/postgresql/<major>/bin),
        then from E(PATH); programs older than the server are refused.
    type: path
requirements:
  - psycopg2 (C(psycopg2-binary)) on the managed host
  - PostgreSQL client programs of the server's major version or newer
"""
