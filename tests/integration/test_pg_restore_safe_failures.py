# Copyright (c) doctorq.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pg_restore_safe when the restore itself fails midway, after every check before it passed.

Two ways to fail for real:
- an invalid archive whose checksums match: a backup set rewritten with the
  engine's catalog helpers around a truncated dump, so verification passes
  and pg_restore hits the end of the data halfway;
- pg_restore killed: a pg_bin_dir whose pg_restore restores the schema and
  the data (no indexes, no constraints) and then SIGKILLs itself, once.
And one where pg_restore succeeds but the result does not match the manifest.

In swap mode the target must come out exactly as it was (same digest, no
half-restored database left); in replace mode it must be recovered from the
safety backup.
"""

from __future__ import annotations

import os

import pytest

# backup_dir, dbs and modified_since_backup are fixtures: imported to be used by name, never referenced
from integration.restore_helpers import (  # noqa: F401  # pylint: disable=unused-import
    MODULE, backup_dir, dbs, failed, failing_bin_dir, load_manifest, modified_since_backup, ok, restore_args,
    rewrite_backup_set, zstd,
)


def truncate_backup(path: str) -> None:
    """Cut the dump inside the table data, recompress, and make the set consistent again."""
    with open(path, "rb") as handle:
        raw = zstd(handle.read(), decompress=True)
    rewrite_backup_set(path, zstd(raw[:int(len(raw) * 0.6)]))


def assert_swap_failure_left_target_intact(result, pg_server, table_digest, dbs, db, before) -> None:
    assert table_digest(pg_server, db) == before
    assert dbs.mine() == [db]  # no __restoring_ database, no __pre_restore_ one
    assert "previous_database" not in result
    assert any("Dropped the half-restored database" in line for line in result["log"]), result["log"]
    # it could not connect to a half-restored database by mistake: the target still accepts connections
    pg_server.connect(db).close()


@pytest.mark.parametrize("jobs", [1, 2], ids=["jobs1-stream", "jobs2-file"])
def test_invalid_archive_in_swap_mode_leaves_the_target_intact(run_module, pg_server, table_digest, dbs, backup_dir,
                                                               modified_since_backup, jobs) -> None:
    db, made, before = modified_since_backup
    truncate_backup(made["path"])

    result = run_module(MODULE, restore_args(pg_server, db, backup_dir, confirm=db, jobs=jobs))

    msg = failed(result)
    assert f"pg_restore into '{db}__restoring_" in msg and "failed" in msg, msg
    assert result["checksums"]["verified"] is True  # the bytes were the manifest's: only the restore could tell
    assert_swap_failure_left_target_intact(result, pg_server, table_digest, dbs, db, before)
    work = os.path.join(backup_dir, ".restore-work")
    assert not os.path.isdir(work) or os.listdir(work) == []

    # into a new database: nothing is left behind either
    msg = failed(run_module(MODULE, restore_args(pg_server, dbs.name("_new"), backup_dir, source_db=db, jobs=jobs)))
    assert "pg_restore into" in msg
    assert dbs.mine() == [db]


def test_invalid_archive_in_replace_mode_recovers_from_the_safety_backup(run_module, pg_server, table_digest, dbs,
                                                                         backup_dir, modified_since_backup) -> None:
    db, made, before = modified_since_backup
    truncate_backup(made["path"])

    result = run_module(MODULE, restore_args(pg_server, db, backup_dir, confirm=db, mode="replace"))

    msg = failed(result)
    assert "pg_restore into" in msg and "recovered from the safety backup" in msg, msg
    assert result["recovered_from_safety_backup"] is True
    assert result["safety_backup"] in msg
    assert table_digest(pg_server, db) == before
    assert dbs.mine() == [db]
    assert any("restoring the safety backup" in line for line in result["log"])

    # a new database in replace mode has no safety backup: it is dropped, not left half-restored
    target = dbs.name("_new")
    result = run_module(MODULE, restore_args(pg_server, target, backup_dir, source_db=db, mode="replace"))
    failed(result)
    assert "recovered_from_safety_backup" not in result
    assert dbs.mine() == [db]


@pytest.mark.parametrize("mode", ["swap", "replace"])
def test_pg_restore_killed_midway(run_module, pg_server, table_digest, dbs, backup_dir, modified_since_backup, tmp_path,
                                  mode) -> None:
    db, _made, before = modified_since_backup
    bin_dir = failing_bin_dir(pg_server, str(tmp_path / "bin"))

    result = run_module(MODULE, restore_args(pg_server, db, backup_dir, confirm=db, mode=mode, pg_bin_dir=bin_dir,
                                             jobs=2))

    msg = failed(result)
    assert os.path.exists(os.path.join(bin_dir, "killed-once"))  # the wrapper really ran and died
    assert "pg_restore into" in msg and "failed" in msg, msg
    assert table_digest(pg_server, db) == before
    assert dbs.mine() == [db]
    if mode == "swap":
        assert_swap_failure_left_target_intact(result, pg_server, table_digest, dbs, db, before)
        assert "recovered_from_safety_backup" not in result
    else:
        assert result["recovered_from_safety_backup"] is True
        # the recovered database is complete: its constraints and indexes are back, not only its rows
        indexes = pg_server.query("SELECT count(*) FROM pg_indexes WHERE schemaname IN ('public', 'billing')", dbname=db)
        assert indexes[0][0] >= 9


def test_replace_mode_when_the_recovery_fails_too(run_module, pg_server, table_digest, dbs, backup_dir,
                                                  modified_since_backup, tmp_path) -> None:
    """Every pg_restore dies: the message must say where the safety backup is, and it must restore."""
    db, _made, before = modified_since_backup
    bin_dir = failing_bin_dir(pg_server, str(tmp_path / "bin"), always=True)

    result = run_module(MODULE, restore_args(pg_server, db, backup_dir, confirm=db, mode="replace", pg_bin_dir=bin_dir))

    msg = failed(result)
    safety = result["safety_backup"]
    assert safety in msg and "failed too" in msg, msg
    assert not result.get("recovered_from_safety_backup")
    # the on-call engineer follows the message: the safety backup restores with working tools
    ok(run_module(MODULE, restore_args(pg_server, db, backup_dir, confirm=db, source=safety)))
    assert table_digest(pg_server, db) == before


@pytest.mark.parametrize("mode", ["swap", "replace"])
def test_restored_database_not_matching_the_manifest_is_rejected(run_module, pg_server, table_digest, dbs, backup_dir,
                                                                 modified_since_backup, mode) -> None:
    db, made, before = modified_since_backup
    manifest = load_manifest(made["path"])
    tables = [dict(t) for t in manifest.tables]
    orders = next(t for t in tables if t["name"] == "orders")
    orders["rows"] += 1
    tables.append({"schema": "public", "name": "ghost", "rows": 3, "rows_estimate": 3, "bytes": 8192})
    rewrite_backup_set(made["path"], tables=tables, table_count=len(tables))

    result = run_module(MODULE, restore_args(pg_server, db, backup_dir, confirm=db, mode=mode))

    msg = failed(result)
    assert "does not match the backup" in msg and "public.ghost" in msg and "public.orders: 1000 rows" in msg, msg
    assert table_digest(pg_server, db) == before
    assert dbs.mine() == [db]
    if mode == "replace":
        assert result["recovered_from_safety_backup"] is True
    else:
        assert_swap_failure_left_target_intact(result, pg_server, table_digest, dbs, db, before)
