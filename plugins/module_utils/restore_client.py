# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pg_restore a backup needs: never older than the pg_dump that wrote it.

pg_restore reads the archives of its own and older pg_dump versions only:
pg_restore 15 stops at a pg_dump 17 archive, one file or directory, with
"unsupported version (1.16) in file header". So every database restore
(pg_restore_safe whole or partial, its check mode, the drills) asks
``reader`` for its pg_restore before anything is touched: the manifest's
``pg_dump_version`` against the pg_restore found (``pg_bin_dir``, or the
server's version), refused with what to install and where to point
``pg_bin_dir``. A manifest that does not say which pg_dump wrote the
backup leaves it to pg_restore, whose refusal ``unreadable`` turns into
the same advice.

A newer pg_restore into an older server: pg_restore 17 sets
``transaction_timeout`` on every connection it opens, a setting servers
before 17 do not know, and ``--exit-on-error`` stops there.
``harmless_errors`` says which errors such a pg_restore may report and
still have restored everything: restore_load.py runs it without
``--exit-on-error`` and accepts its end only when ``restored_anyway``
(``real_errors`` are what it reports otherwise).
"""

from __future__ import annotations

import re

from ansible_collections.doctorq.backup.plugins.module_utils.catalog import Manifest
from ansible_collections.doctorq.backup.plugins.module_utils.errors import ConfigError
from ansible_collections.doctorq.backup.plugins.module_utils.pg import PgClient, client_major

UNSUPPORTED = re.compile(r"unsupported version \((\d+\.\d+)\) in file header")
# archive version -> the first pg_dump that writes it (a lower bound: later ones may write it too)
FIRST_WRITTEN_BY = {"1.15": 16, "1.16": 17}
# (setting, the first server major that knows it): what a newer pg_restore sets on each connection
NEW_SETTINGS = (("transaction_timeout", 17),)
# one error of pg_restore's: its "error:" line and the "Command was:" line that may follow
_ERROR = re.compile(r"^pg_restore: error: (.*)(?:\nCommand was: (.*))?$", re.M)


def advice(major: int) -> str:
    return (f"install the PostgreSQL {major} client tools or newer (postgresql-client-{major}) and point pg_bin_dir "
            "at the directory holding their pg_restore")


def reader(pg: PgClient, manifest: Manifest) -> str:
    """pg_restore for ``manifest``'s backup: not older than the server (``pg.tool``) nor than the pg_dump that wrote it."""
    path = pg.tool("pg_restore")
    wrote = manifest.pg_dump_version
    if wrote and client_major(path) < wrote:
        raise ConfigError(f"backup {manifest.id} was written by pg_dump {wrote}, and pg_restore "
                          f"{client_major(path)} ({path}) cannot read the archives of a newer pg_dump: "
                          f"{advice(wrote)}, then run again. Refused before the restore began: no safety backup "
                          "taken, no database created or changed.")
    return path


def unreadable(stderr: str, path: str) -> str | None:
    """pg_restore's "unsupported version ... in file header" in the words of ``reader``, or None."""
    match = UNSUPPORTED.search(stderr)
    if not match:
        return None
    major = client_major(path)
    needs = FIRST_WRITTEN_BY.get(match.group(1), major + 1)
    return (f"pg_restore {major} ({path}) cannot read this backup: its archive version {match.group(1)} was written "
            f"by a newer pg_dump ({needs} or later), and its manifest does not say which: {advice(needs)}.")


def harmless_errors(pg: PgClient, path: str) -> tuple[str, ...]:
    """The settings ``path``'s pg_restore sets that the server does not know (none when it knows them all)."""
    client, server = client_major(path), pg.server_version()[0]
    return tuple(name for name, since in NEW_SETTINGS if server < since <= client)


def real_errors(stderr: str, harmless: tuple[str, ...]) -> list[str]:
    """pg_restore's errors in ``stderr`` other than an unknown ``harmless`` setting it tried to set."""
    found = []
    for message, command in _ERROR.findall(stderr):
        known = any(f'unrecognized configuration parameter "{name}"' in message and command.startswith(f"SET {name} ")
                    for name in harmless)
        if not known:
            found.append(message + (f" (command: {command})" if command else ""))
    return found


def restored_anyway(status: int | None, stderr: str, harmless: tuple[str, ...]) -> bool:
    """pg_restore without ``--exit-on-error`` went to its end and its only errors were ``harmless`` settings."""
    return (bool(harmless) and status == 1 and "errors ignored on restore" in stderr
            and bool(_ERROR.search(stderr)) and not real_errors(stderr, harmless))
