# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 11, case 13: a globals restore (roles, tablespaces) that fails is a failed restore, never "Globals restored".

Two real ways to fail after every check before them passed:
- psql: the restore connects as a role that may create roles but is not a
  superuser, so the backup's ``ALTER ROLE postgres WITH SUPERUSER ...`` is
  refused by the server;
- the decompressor: a globals file cut short (its manifest rewritten to match,
  so the checksums pass and only zstd can tell).
Either way the run fails naming the program and its message, the log never
says "Globals restored", and no database is created.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import secrets

import pytest

# backup_dir and dbs are fixtures: imported to be used by name, never referenced
from integration.restore_helpers import (  # noqa: F401  # pylint: disable=unused-import
    MODULE, backup, backup_dir, dbs, failed, load_manifest, restore_args,
)

from ansible_collections.doctorq.backup.plugins.module_utils.pipeline import write_file_atomic

pytestmark = pytest.mark.faults


def test_a_statement_of_the_globals_that_fails_fails_the_restore(run_module, pg_server, dbs, backup_dir):
    db = dbs.sample()
    backup(run_module, pg_server, db, backup_dir, globals=True)
    role, password = f"rs_restorer_{dbs.token}", secrets.token_urlsafe(12)
    pg_server.query(f'CREATE ROLE "{role}" LOGIN CREATEDB CREATEROLE PASSWORD %s', (password,))
    try:
        target = dbs.name("_g")
        result = run_module(MODULE, restore_args(pg_server, target, backup_dir, source_db=db, load={"globals": True},
                                                 login_user=role, login_password=password))

        msg = failed(result)
        assert "globals" in msg and "psql exited with status 3" in msg and "must be superuser" in msg, msg
        assert not any("Globals restored" in line for line in result["log"]), result["log"]
        assert dbs.mine() == [db]  # nothing was restored after the failure
        assert password not in msg
    finally:
        pg_server.query(f'DROP ROLE IF EXISTS "{role}"')


def test_a_globals_file_the_decompressor_rejects_fails_the_restore(run_module, pg_server, dbs, backup_dir):
    db = dbs.sample()
    made = backup(run_module, pg_server, db, backup_dir, globals=True)
    manifest = load_manifest(made["path"])
    path = os.path.join(backup_dir, manifest.globals["file"])
    with open(path, "rb") as handle:
        data = handle.read()[:-16]  # the zstd frame cut short: its checksums, rewritten below, match
    write_file_atomic(path, data)
    globals_ = dict(manifest.globals, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                    md5=hashlib.md5(data).hexdigest())  # nosec - the manifest's own field
    write_file_atomic(made["path"] + ".manifest.json", dataclasses.replace(manifest, globals=globals_).to_json())

    result = run_module(MODULE, restore_args(pg_server, dbs.name("_g"), backup_dir, source_db=db, load={"globals": True}))

    msg = failed(result)
    assert result["checksums"]["verified"] is True  # the bytes are the manifest's: only zstd can tell
    assert "globals" in msg and "zstd exited with status 1" in msg, msg
    assert not any("Globals restored" in line for line in result["log"]), result["log"]
    assert dbs.mine() == [db]
