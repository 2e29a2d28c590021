# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a restore promised to finish, written down before the step a ``kill -9`` would leave half done.

``mode: replace`` drops the live database before the backup is restored into
its name; ``mode: swap`` closes the live database to connections for the
moment of the rename. A run killed in between (OOM killer, ``kill -9``, a
reboot) cannot clean up after itself, so before such a step it writes its
intent: a small 0600 JSON file in ``backup_dir``, synced to disk, naming the
database, the safety backup (data file and manifest), the source, and what
the database carries outside its dump. The run removes it when the step is
over, or when it restored the safety backup itself after a failure.

An intent found by a later run holding the database's lock is a dead run's:
``pg_restore_safe`` finishes it (restore.py); ``pg_backup`` refuses to back
up a database a replace restore left half done, and gives the command that
finishes the fall-back.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
from typing import Any

from ansible_collections.doctorq.backup.plugins.module_utils.catalog import MANIFEST_SUFFIX, encode_name
from ansible_collections.doctorq.backup.plugins.module_utils.errors import DoctorqError, StorageError
from ansible_collections.doctorq.backup.plugins.module_utils.pipeline import remove_quietly, write_file_atomic

VERSION = 1


def path(backup_dir: str, db: str) -> str:
    return os.path.join(backup_dir, f".restore_intent_{encode_name(db)}.json")


def write(backup_dir: str, db: str, record: dict[str, Any]) -> str:
    """Write (or replace) the intent of a restore of ``db``; on disk, directory entry included, when this returns."""
    where = path(backup_dir, db)
    record = {"version": VERSION, "database": db, "pid": os.getpid(), "host": socket.gethostname(), **record}
    if record.get("safety_backup"):
        record["safety_manifest"] = record["safety_backup"] + MANIFEST_SUFFIX
    write_file_atomic(where, (json.dumps(record, indent=1, sort_keys=True) + "\n").encode("utf-8"))
    try:
        fd = os.open(backup_dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StorageError(f"cannot sync {backup_dir} after writing {where}: {exc.strerror}; nothing was dropped.") from None
    return where


def read(backup_dir: str, db: str) -> dict[str, Any] | None:
    """The intent a restore of ``db`` left, or None."""
    where = path(backup_dir, db)
    try:
        with open(where, encoding="utf-8") as handle:
            record = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StorageError(f"cannot read {where}, the intent an interrupted restore of {db!r} left: {exc}. Look at "
                           "it (and at that restore's log), put the database right by hand, then remove it.") from None
    if not isinstance(record, dict) or record.get("database") != db or record.get("mode") not in ("swap", "replace"):
        raise StorageError(f"{where} is not the intent of a restore of {db!r} written by doctorq.backup: look at "
                           "it, then remove it.")
    record["file"] = where
    return record


def remove(backup_dir: str, db: str) -> None:
    remove_quietly(path(backup_dir, db))


def who(intent: dict[str, Any]) -> str:
    """``the mode=replace restore of 'db' (pid 42 on host, started ..., log ...)``"""
    log = f", log {intent['log_file']}" if intent.get("log_file") else ""
    return (f"the mode={intent['mode']} restore of {intent['database']!r} (pid {intent.get('pid')} on "
            f"{intent.get('host')}, started {intent.get('started_at')}{log})")


def fall_back_command(intent: dict[str, Any], backup_dir: str) -> str:
    """The restore that finishes a replace restore's fall-back: its safety backup, into its database."""
    extra = {"restore_db": intent["database"], "restore_source": intent["safety_backup"],
             "restore_confirm": intent["database"], "backup_dir": backup_dir}
    return f"ansible-playbook -i inventory playbooks/restore.yml -l {socket.gethostname()} -e {shlex.quote(json.dumps(extra))}"


def refuse_backup(backup_dir: str, db: str) -> None:
    """A backup of a database a killed replace restore left dropped or half restored would be a backup of nothing."""
    intent = read(backup_dir, db)
    if intent is None or intent["mode"] != "replace":
        return
    raise DoctorqError(
        f"{who(intent)} was interrupted after it dropped {db!r}: the database is missing or holds half a restore, "
        f"and a backup of it now would become the newest backup. Its data from before that restore is in the "
        f"safety backup {intent['safety_backup']}. Finish the fall-back first: {fall_back_command(intent, backup_dir)} "
        f"(pg_restore_safe with those options; any pg_restore_safe run of {db!r} with this backup_dir finishes it). "
        "Nothing was backed up.")
