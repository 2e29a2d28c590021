"""Recovery targets besides a time and a name (issue 14, "What DBAs expect"): xid, lsn and immediate.

Rows written around a known transaction ID (``txid_current()``) and WAL
location (``pg_current_wal_lsn()``) on a real archiving cluster; each target
recovers into a scratch cluster holding exactly the rows it should (xid
inclusive and exclusive, as pgBackRest's ``--target-exclusive``), and
``immediate`` gives the backup's own state. Its own cluster and SeaweedFS
(test_pgbackrest's bed), so its one backup is the only one.
"""
from __future__ import annotations

import os
import secrets
import shutil
from typing import Any

import pytest

import testbed
# test_pgbackrest's bed (TLS SeaweedFS, an archiving cluster, a stanza) and base backup, one of its own for this module
from integration.test_pgbackrest import base_backup, bed, pitr_args, scratch_query  # noqa: F401  # pylint: disable=unused-import


@pytest.fixture(scope="module")
def rows(bed, base_backup) -> dict[str, Any]:  # pylint: disable=redefined-outer-name
    """Rows 1-10, 11-20 in transaction ``xid``, 21-30, then ``lsn`` (just after their commit), then 31-40; archived."""
    server = bed["server"]
    table = f"targets_{secrets.token_hex(3)}"
    server.query(f"CREATE TABLE {table} (id integer PRIMARY KEY)")
    server.query(f"INSERT INTO {table} SELECT generate_series(1, 10)")
    # one transaction: its rows and its ID (a multi-statement query runs as one transaction)
    xid = int(server.query(f"INSERT INTO {table} SELECT generate_series(11, 20); SELECT txid_current()")[0][0])
    server.query(f"INSERT INTO {table} SELECT generate_series(21, 30)")
    # the insert location: the test bed's cluster commits asynchronously, so pg_current_wal_lsn() (written) may lag
    lsn = server.query("SELECT pg_current_wal_insert_lsn()::text")[0][0]
    server.query(f"INSERT INTO {table} SELECT generate_series(31, 40)")
    bed["engine"].check()  # everything archived
    return {"table": table, "xid": xid, "lsn": lsn}


def recovered_ids(bed: dict[str, Any], run_module, target: dict[str, Any], table: str) -> list[int] | None:  # pylint: disable=redefined-outer-name
    """The table's ids in a scratch cluster recovered to ``target`` (None: no such table there)."""
    result = run_module("pg_pitr_restore", pitr_args(bed, target=target, scratch={"keep": True}))
    scratch = result.get("scratch") or {}
    try:
        assert not result.get("failed"), result.get("msg")
        assert result["recovery"]["in_recovery"] is False
        if not scratch_query(scratch, f"SELECT to_regclass('{table}') IS NOT NULL")[0][0]:
            return None
        return [r[0] for r in scratch_query(scratch, f"SELECT id FROM {table} ORDER BY id")]
    finally:
        if scratch.get("data_dir"):
            testbed.stop_cluster(bed["server"].bin_dir, scratch["data_dir"])
            shutil.rmtree(scratch["data_dir"], ignore_errors=True)


def test_xid_target_keeps_that_transaction(bed, rows, run_module):  # pylint: disable=redefined-outer-name
    assert recovered_ids(bed, run_module, {"xid": str(rows["xid"])}, rows["table"]) == list(range(1, 21))


def test_exclusive_xid_target_stops_just_before_it(bed, rows, run_module):  # pylint: disable=redefined-outer-name
    assert recovered_ids(bed, run_module, {"xid": rows["xid"], "exclusive": True}, rows["table"]) == list(range(1, 11))


def test_lsn_target_keeps_what_was_written_before_it(bed, rows, run_module):  # pylint: disable=redefined-outer-name
    assert recovered_ids(bed, run_module, {"lsn": rows["lsn"]}, rows["table"]) == list(range(1, 31))


def test_immediate_target_is_the_backups_own_state(bed, rows, run_module):  # pylint: disable=redefined-outer-name
    # the table was created after the one backup: the backup's consistent state does not have it
    assert recovered_ids(bed, run_module, {"immediate": True}, rows["table"]) is None


def test_bad_xid_and_lsn_are_refused_before_any_work(bed, base_backup, run_module, tmp_path):  # pylint: disable=redefined-outer-name
    never = str(tmp_path / "never")
    bad_xid = run_module("pg_pitr_restore", pitr_args(bed, target={"xid": "12a"}, scratch={"dir": never}))
    assert bad_xid["failed"] and "is not a transaction ID: give a positive integer" in bad_xid["msg"]
    bad_lsn = run_module("pg_pitr_restore", pitr_args(bed, target={"lsn": "3000060"}, scratch={"dir": never}))
    assert bad_lsn["failed"] and "is not a WAL location" in bad_lsn["msg"] and "0/3000060" in bad_lsn["msg"]
    early = run_module("pg_pitr_restore", pitr_args(bed, target={"lsn": "0/1"}, scratch={"dir": never}))
    assert early["failed"] and "lies before the end of every backup" in early["msg"], early["msg"]
    assert not os.path.exists(never)
