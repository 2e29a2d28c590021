# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Databases as whole objects, for restores and drills: SQL text, create alike, close, reopen, drop.

Everything here runs from the maintenance database (``postgres``): the
database it acts on may not exist yet, or must have no session of ours.
Names go into SQL through ``quote_ident`` and values through
``sql_literal``; a name longer than PostgreSQL's 63 bytes is cut here, on
a character boundary, before the server would cut it silently.
"""

from __future__ import annotations

import re
import time
from typing import Callable

from ansible_collections.doctorq.backup.plugins.module_utils.errors import PgError
from ansible_collections.doctorq.backup.plugins.module_utils.pg import PgClient, quote_ident

MAX_IDENT = 63

# Settings whose value is a list written with identifier quoting (pg_dump's variable_is_guc_list_quote).
GUC_LISTS = frozenset(("local_preload_libraries", "search_path", "session_preload_libraries",
                       "shared_preload_libraries", "temp_tablespaces", "unix_socket_directories"))


# -- SQL text ------------------------------------------------------------------------------------
def derived_db_name(db: str, suffix: str) -> str:
    """``<db><suffix>`` within PostgreSQL's 63 *bytes*, ``db`` cut between characters.

    A longer name is silently shortened by the server, so the database
    created would not be the one every later statement names (``clínica``
    and any non-ASCII name count two or more bytes per letter).
    """
    room = MAX_IDENT - len(suffix.encode("utf-8"))
    return db.encode("utf-8")[:room].decode("utf-8", errors="ignore") + suffix


def sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def guc_value(name: str, value: str) -> str:
    """A stored ``pg_db_role_setting`` value as SQL for ``SET name TO ...``: every element a literal."""
    if name.lower() not in GUC_LISTS or not value:
        return sql_literal(value)
    return ", ".join(sql_literal(element) for element in split_guc_list(value))


def split_guc_list(value: str) -> list[str]:
    """``"$user", public`` -> ``['$user', 'public']`` (the server writes list elements as identifiers)."""
    elements, i = [], 0
    while i < len(value):
        while i < len(value) and value[i] in " ,":
            i += 1
        if i >= len(value):
            break
        if value[i] == '"':
            j, word = i + 1, []
            while j < len(value):
                if value[j] == '"':
                    if value[j + 1:j + 2] == '"':
                        word.append('"')
                        j += 2
                        continue
                    break
                word.append(value[j])
                j += 1
            elements.append("".join(word))
            i = j + 1
        else:
            j = value.find(",", i)
            j = len(value) if j < 0 else j
            elements.append(value[i:j].strip())
            i = j
    return elements


def conninfo_db(name: str) -> str:
    """A conninfo naming only the database: a name with ``=`` in it cannot become options."""
    return "dbname='" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"


# -- a database and what it carries outside its dump ------------------------------------------------
def database_names(pg: PgClient, pattern: re.Pattern[str]) -> list[str]:
    """The databases whose whole name matches ``pattern`` (``re.match``), in name order."""
    return [name for (name,) in pg.query("SELECT datname FROM pg_database ORDER BY 1", db="postgres")
            if pattern.match(name)]


def database_settings(pg: PgClient, name: str) -> tuple | None:
    """Owner, encoding and locale of a database, to create its successor alike."""
    rows = pg.query("SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, datctype "
                    "FROM pg_database WHERE datname = %s", (name,), db="postgres")
    return rows[0] if rows else None


def create_database(pg: PgClient, name: str, settings: tuple | None) -> None:
    """An empty database (from ``template0``), with the owner, encoding and locale of ``database_settings``."""
    options = "TEMPLATE template0"
    if settings:
        owner, encoding, collate, ctype = settings
        options += (f" OWNER {quote_ident(owner)} ENCODING {sql_literal(encoding)}"
                    f" LC_COLLATE {sql_literal(collate)} LC_CTYPE {sql_literal(ctype)}")
    pg.query(f"CREATE DATABASE {quote_ident(name)} {options}", db="postgres")


def database_extras(pg: PgClient, name: str) -> list[tuple[str, str]]:
    """What a database carries outside its dump, as (head, tail) of statements around a successor's name.

    Database-level privileges (GRANT ... ON DATABASE) and settings (ALTER
    DATABASE ... SET, ALTER ROLE ... IN DATABASE ... SET), written back the
    way pg_dumpall does.
    """
    extras = []
    rows = pg.query(
        "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, a.privilege_type "
        "FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = %s", (name,), db="postgres")
    for grantee, privilege in rows:
        who = "PUBLIC" if grantee == "PUBLIC" else quote_ident(grantee)
        extras.append((f"GRANT {privilege} ON DATABASE ", f" TO {who}"))
    rows = pg.query("SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END, "
                    "unnest(s.setconfig) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
                    "WHERE d.datname = %s ORDER BY 1 NULLS FIRST", (name,), db="postgres")
    for role, item in rows:
        setting, _sep, value = item.partition("=")
        target = f"ROLE {quote_ident(role)} IN DATABASE" if role else "DATABASE"
        extras.append((f"ALTER {target} ", f" SET {quote_ident(setting)} TO {guc_value(setting, value)}"))
    return extras


def apply_extras(pg: PgClient, extras: list[tuple[str, str]], name: str) -> None:
    """``database_extras`` of one database, given to ``name``."""
    for head, tail in extras:
        pg.query(head + quote_ident(name) + tail, db="postgres")


# -- sessions, renames, drops ----------------------------------------------------------------------
def allow_connections(pg: PgClient, name: str, allow: bool = True) -> None:
    pg.query(f"ALTER DATABASE {quote_ident(name)} WITH ALLOW_CONNECTIONS {'true' if allow else 'false'}",
             db="postgres")


def close_target(pg: PgClient, name: str, log: Callable[[str], None]) -> int:
    """Block new connections to ``name`` and end the open ones; returns how many were ended."""
    allow_connections(pg, name, False)
    ended = 0
    for _attempt in range(50):
        rows = pg.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                        "AND pid <> pg_backend_pid()", (name,), db="postgres")
        ended += len(rows)
        if not pg.query("SELECT 1 FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                        (name,), db="postgres"):
            break
        time.sleep(0.1)
    else:
        allow_connections(pg, name)
        raise PgError(f"sessions on {name!r} did not end within 5 s; nothing was renamed. Try again.")
    log(f"Active connections terminated on {name!r}: {ended}")
    return ended


def reopen(pg: PgClient, name: str) -> bool:
    """Allow connections to ``name`` again if a run closed it; True when it did."""
    rows = pg.query("SELECT datallowconn FROM pg_database WHERE datname = %s", (name,), db="postgres")
    if not rows or rows[0][0]:
        return False
    allow_connections(pg, name)
    return True


def rename_database(pg: PgClient, name: str, new: str) -> None:
    pg.query(f"ALTER DATABASE {quote_ident(name)} RENAME TO {quote_ident(new)}", db="postgres")


def drop_database(pg: PgClient, name: str) -> None:
    """End every session on ``name`` and drop it; no error when it is gone already."""
    pg.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,), db="postgres")
    pg.query(f"DROP DATABASE IF EXISTS {quote_ident(name)}", db="postgres")
